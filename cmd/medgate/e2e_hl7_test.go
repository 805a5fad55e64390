package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hl7Receiver starts the MLLP receiver the demo uses and returns its
// address and everything it has received so far.
func hl7Receiver(t *testing.T) (string, func() string) {
	t.Helper()
	ln, received, err := mllpReceiver()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), func() string { return strings.Join(received(), "\r") }
}

// TestE2EHL7MaskedAcrossTheBorder sends ADT^A01 and ORU^R01 with the real
// mllp_send from an EU interface engine to a US receiver through two
// sidecars; the EU sidecar de-identifies what leaves.
func TestE2EHL7MaskedAcrossTheBorder(t *testing.T) {
	mllpSend, err := exec.LookPath("mllp_send")
	if err != nil {
		t.Skip("mllp_send not installed (apt-get install python3-hl7)")
	}
	ca := newTestCA(t, "hospital.example")
	receiver, received := hl7Receiver(t)
	inEnv := identityEnv(ca.issue("spiffe://hospital.example/us/ehr", time.Hour), ca.bundle())
	inEnv["MEDGATE_INBOUND_LISTEN"] = "127.0.0.1:0"
	inEnv["MEDGATE_INBOUND_UPSTREAM"] = receiver
	inEnv["MEDGATE_INBOUND_ALLOW"] = "spiffe://hospital.example/eu/*"
	in := startSidecar(t, inEnv)

	outEnv := outboundEnv(ca, "spiffe://hospital.example/eu/ris", in.in, "spiffe://hospital.example/us/ehr")
	policy := writeBorderPolicy(t, "hipaa-safe-harbor", "    - {dataClass: records, from: EU, to: US, action: deidentify, maskingProfile: out}\n", "apiVersion: medgate.io/v1\nkind: AccessPolicy\nmetadata: {name: default}\nspec: {direction: outbound, dataClass: records, allow: [\"spiffe://hospital.example/us/*\"]}\n")
	outEnv["MEDGATE_OUTBOUND_PROTOCOL"] = "hl7"
	outEnv["MEDGATE_POLICY_FILE"] = policy
	out := startSidecar(t, outEnv)
	_, port, _ := net.SplitHostPort(out.out)

	dir := t.TempDir()
	adt := filepath.Join(dir, "adt.hl7")
	os.WriteFile(adt, []byte("MSH|^~\\&|ADT|EU-HOSP|EHR|US|20261122091500||ADT^A01|MSG0001|P|2.5\r"+
		"PID|1||4711^^^EUH^MR||"+strings.ReplaceAll(canary, " ", "^")+"||19700101|F|||12 Rue Canary^^Lyon^^69001^FR||+33-4-5555-0101\r"+
		"NK1|1|Quixote^Marta|SPO|12 Rue Canary^^Lyon\r"), 0o600)
	oru := filepath.Join(dir, "oru.hl7")
	os.WriteFile(oru, []byte("MSH|^~\\&|LAB|EU-HOSP|EHR|US|20261122101500||ORU^R01|MSG0002|P|2.5\r"+
		"PID|1||4711^^^EUH^MR||"+strings.ReplaceAll(canary, " ", "^")+"||19700101|F\r"+
		"OBR|1|ORD1|FIL1|24331-1^Lipid panel^LN|||20261121083000\r"+
		"OBX|1|NM|2093-3^Cholesterol^LN||190|mg/dL|||||F\r"), 0o600)
	for _, f := range []string{adt, oru} {
		outp, err := exec.Command(mllpSend, "--loose", "-f", f, "-p", port, "127.0.0.1").CombinedOutput()
		if err != nil || !strings.Contains(string(outp), "MSA|AA") {
			t.Fatalf("mllp_send %s: no ACK back: %v\n%s", filepath.Base(f), err, outp)
		}
	}
	got := received()
	if !strings.Contains(got, "ADT^A01") || !strings.Contains(got, "ORU^R01") || !strings.Contains(got, "2093-3^Cholesterol") {
		t.Fatalf("receiver did not get both messages with their clinical content:\n%q", got)
	}
	for _, phi := range []string{"Zebulon", "Quixote", "4711", "19700101", "Rue Canary", "5555-0101"} {
		if strings.Contains(got, phi) {
			t.Errorf("%q crossed the border unmasked", phi)
		}
	}

	// Garbage in a frame is refused with a negative ACK; nothing arrives.
	bad := filepath.Join(dir, "bad.hl7")
	os.WriteFile(bad, []byte("MSH|^~\\&|\rthis line is prose about "+canary+", not a segment\r"), 0o600)
	outp, _ := exec.Command(mllpSend, "--loose", "-f", bad, "-p", port, "127.0.0.1").CombinedOutput()
	if strings.Contains(string(outp), "MSA|AA") {
		t.Errorf("garbage was acknowledged:\n%s", outp)
	}
	if strings.Contains(received(), "prose") {
		t.Error("garbage reached the receiver")
	}

	if evs := out.eventsAtLeast(2, func(e map[string]any) bool { return e["kind"] == "object" }); len(evs) < 2 {
		t.Errorf("object events: %v", evs)
	}
	if evs := out.eventsWith(func(e map[string]any) bool { return e["kind"] == "session_end" && e["outcome"] == "unmaskable" }); len(evs) == 0 {
		t.Error("no access event for the refused message")
	}
	for _, sc := range []*sidecar{in, out} {
		ev, _ := os.ReadFile(sc.events)
		if strings.Contains(sc.logs.String()+string(ev), "Zebulon") {
			t.Error("canary in a sidecar's logs or events")
		}
	}
}
