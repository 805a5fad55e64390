package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// writeWhenPolicy writes the posture rig's rule set admitting every EU
// identity on the route, which also carries extra (spec lines).
func (r *postureRig) writeWhenPolicy(extra string) {
	r.t.Helper()
	tmp := r.policy + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf(ruleSet, r.jwks, `"spiffe://hospital.example/eu/*"`, extra)), 0o600); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Rename(tmp, r.policy); err != nil {
		r.t.Fatal(err)
	}
}

// TestE2EPolicyWhenAndDryRun: a route whose when condition admits only the
// lab refuses another identity its allow list names, with the reason in
// the access event; put in dry run, the same route lets that identity
// through and its event records the denial that was not enforced.
func TestE2EPolicyWhenAndDryRun(t *testing.T) {
	r := newPostureRig(t)
	const when = "  when: peer.id.endsWith(\"/lab\")\n"
	r.writeWhenPolicy(when)
	r.startInbound()
	lab, ward := "spiffe://hospital.example/eu/lab", "spiffe://hospital.example/eu/ward"
	labOut, wardOut := r.outbound(lab, ""), r.outbound(ward, "")

	if !openLive(t, labOut.out).echo("PID|1||" + canary) {
		t.Fatal("the lab, which the condition admits, could not move data")
	}
	if openLive(t, wardOut.out).echo("PID|1||" + canary) {
		t.Fatal("the ward moved data; the condition should refuse it")
	}
	refused := r.in.eventsWith(func(e map[string]any) bool {
		return e["kind"] == "admission" && e["peer_id"] == ward && e["verdict"] == "deny"
	})
	if len(refused) == 0 || !hasReason(refused[0], "condition_false") || refused[0]["outcome"] != "denied" || refused[0]["dry_run"] != nil {
		t.Fatalf("refusal events for the ward: %v; want an enforced deny with condition_false", refused)
	}

	r.writeWhenPolicy(when + "  dryRun: true\n")
	deadline := time.Now().Add(15 * time.Second)
	for !openLive(t, wardOut.out).echo("PID|1||" + canary) {
		if time.Now().After(deadline) {
			t.Fatal("the ward is still refused with the route in dry run")
		}
		time.Sleep(200 * time.Millisecond)
	}
	admitted := r.in.eventsWith(func(e map[string]any) bool {
		return e["kind"] == "admission" && e["peer_id"] == ward && e["outcome"] == "admitted"
	})
	if len(admitted) == 0 {
		t.Fatal("no admission event for the ward in dry run")
	}
	if e := admitted[0]; e["dry_run"] != true || e["verdict"] != "deny" || !hasReason(e, "condition_false") {
		t.Errorf("dry-run admission event: %v; want dry_run, verdict deny, reason condition_false", e)
	}
	if !strings.Contains(r.in.logs.String(), "dry run: policy denies, not enforced") {
		t.Error("no warning for the denial that was not enforced")
	}
	// The lab is admitted as before, and its event says the route is in
	// dry run.
	if !openLive(t, labOut.out).echo("lab again") {
		t.Fatal("the lab was refused in dry run")
	}
	if evs := r.in.eventsWith(func(e map[string]any) bool {
		return e["kind"] == "admission" && e["peer_id"] == lab && e["verdict"] == "allow" && e["dry_run"] == true
	}); len(evs) == 0 {
		t.Error("no dry-run admission event for the lab")
	}

	data, _ := os.ReadFile(r.in.events)
	if strings.Contains(string(data)+r.in.logs.String(), "Zebulon") {
		t.Error("canary in the inbound sidecar's events or logs")
	}
}
