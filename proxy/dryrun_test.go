package proxy_test

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/medgate/medgate/posture"
	"github.com/medgate/medgate/proxy"
)

// dryRunDecider denies every peer on a route in dry run, for reason; a
// non-empty profile is the masking the residency rule chose.
type dryRunDecider struct {
	reason  posture.Reason
	profile string
	version string
}

func (d dryRunDecider) Decide(posture.Request) posture.Decision {
	return posture.Decision{Verdict: posture.Deny, DryRun: true, Reasons: []posture.Reason{d.reason}, Profile: d.profile, PolicyVersion: d.version}
}

func TestDryRunAdmitsAndRecordsTheDenial(t *testing.T) {
	const lab = "spiffe://eu.example/lab"
	rig := newAuthzRig(t, dryRunDecider{reason: posture.ReasonConditionFalse, version: "v1"}, map[string]proxy.PostureProvider{lab: nil})
	s := rig.dial(t, lab)
	if !s.echo("admitted in dry run") {
		t.Fatal("a dry-run denial was enforced")
	}
	evs := rig.events.find("admission", "inbound")
	if len(evs) != 1 {
		t.Fatalf("admission events: %+v", evs)
	}
	if e := evs[0]; !e.DryRun || e.Verdict != "deny" || e.Outcome != "admitted" || len(e.Reasons) != 1 || e.Reasons[0] != "condition_false" {
		t.Errorf("admission event: %+v; want dry_run, verdict deny, outcome admitted, reason condition_false", e)
	}

	// Judged again on other dry-run reasons, the session runs on the same
	// terms and stays.
	rig.in.SetDecider(dryRunDecider{reason: posture.ReasonIDNotAllowed, version: "v2"})
	waitFor(t, func() bool {
		for _, e := range rig.events.find("reauthorization", "inbound") {
			if e.PolicyVersion == "v2" && e.DryRun && e.Verdict == "deny" && e.Reasons[0] == "id_not_allowed" {
				return true
			}
		}
		return false
	})
	if !s.echo("still admitted") {
		t.Error("a session still admitted in dry run was closed")
	}
}

// TestDryRunNeverCrossesUnmasked: a dry-run denial where residency chose
// masking is admitted only where the data can be masked; on an opaque
// route the refusal is enforced.
func TestDryRunNeverCrossesUnmasked(t *testing.T) {
	const lab = "spiffe://eu.example/lab"
	rig := newAuthzRig(t, dryRunDecider{reason: posture.ReasonConditionFalse, profile: "pseudonymize", version: "v1"}, map[string]proxy.PostureProvider{lab: nil})
	if rig.dial(t, lab).echo("must not pass") {
		t.Fatal("data crossed unmasked on a route that residency masks")
	}
	waitFor(t, func() bool { return len(rig.events.find("admission", "inbound")) > 0 })
	e := rig.events.find("admission", "inbound")[0]
	if e.DryRun || e.Verdict != "deny" || e.Outcome != "denied" || e.Reasons[0] != "masking_required" {
		t.Errorf("admission event: %+v; want an enforced deny with masking_required", e)
	}
}

// TestDryRunMasksWhatResidencyMasks: an outbound dry-run denial whose
// residency rule de-identifies sends, and sends masked.
func TestDryRunMasksWhatResidencyMasks(t *testing.T) {
	out, received, events := maskedHL7Pair(t, dryRunDecider{reason: posture.ReasonConditionFalse, profile: "hipaa-safe-harbor", version: "v1"})
	c, err := net.Dial("tcp", out)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "\x0bMSH|^~\\&|LAB|HOSP|RIS|EU|20261122101500||ADT^A01|MSG00001|P|2.5\rPID|1||4711^^^HOSP^MR||ZEBULON^QUIXOTE||19700101|F\r\x1c\x0d")
	ack := make([]byte, 256)
	if n, err := c.Read(ack); err != nil || !strings.Contains(string(ack[:n]), "MSA|AA") {
		t.Fatalf("no ACK back to the sender: %q, %v", ack[:n], err)
	}
	got := received()
	if len(got) != 1 || strings.Contains(got[0], "ZEBULON") || strings.Contains(got[0], "4711") {
		t.Fatalf("receiver got %q; want one masked message", got)
	}
	evs := events.find("admission", "outbound")
	if len(evs) != 1 || !evs[0].DryRun || evs[0].Verdict != "deny" || evs[0].Outcome != "admitted" || evs[0].Profile != "hipaa-safe-harbor" {
		t.Errorf("admission events: %+v", evs)
	}
}
