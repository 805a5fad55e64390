package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestE2EDemo(t *testing.T) {
	out, err := runBinary(nil, "demo", "--mib", "4")
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"SHA-256 identical at both ends", "laptop-7 refused before any byte reached the PACS: disk_not_encrypted", "billing refused before any byte reached the PACS: id_not_allowed",
		"arrived  PID|1||", "the EHR's ACK came back to the RIS: MSA|AA",
		"the lab workstation's next transfer is refused: id_not_allowed", "the lab is admitted again",
		"hash chain and signed checkpoint verified", "admission  deny     -      spiffe://hospital.example/billing", "\nok\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

// TestE2EDemoDeidentifies checks the demo's HL7 line shows a message that
// arrived without the patient's name, ID or birth date.
func TestE2EDemoDeidentifies(t *testing.T) {
	out, err := runBinary(nil, "demo", "--mib", "1")
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "arrived  PID|") {
			for _, phi := range []string{"DOE", "JANE", "4711", "19700101", "Rue Exemple", "5555"} {
				if strings.Contains(line, phi) {
					t.Errorf("%q in what arrived: %s", phi, line)
				}
			}
			return
		}
	}
	t.Fatalf("no arrived line:\n%s", out)
}

// TestE2EAuditQueryByPatient finds the demo's HL7 message in its audit
// store by the real patient ID: the query computes the keyed pseudonym,
// which is what the event holds.
func TestE2EAuditQueryByPatient(t *testing.T) {
	out, err := runBinary(nil, "demo", "--mib", "1", "--keep")
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	_, rest, _ := strings.Cut(out, "working directory ")
	dir, _, _ := strings.Cut(rest, ")")
	t.Cleanup(func() { os.RemoveAll(dir) })
	var token string
	for _, line := range strings.Split(out, "\n") {
		if _, pid, ok := strings.Cut(line, "arrived  PID|1||"); ok {
			token, _, _ = strings.Cut(pid, "^")
		}
	}
	if token == "" {
		t.Fatalf("no pseudonym in the demo's output:\n%s", out)
	}
	env := map[string]string{"MEDGATE_KEYRING": filepath.Join(dir, "keys", "keyring.json")}
	query := func(patient string) []map[string]any {
		out, err := runBinary(env, "audit", "query", "--store", filepath.Join(dir, "controlplane"), "--patient", patient, "--format", "json")
		if err != nil {
			t.Fatalf("audit query: %v\n%s", err, out)
		}
		var entries []struct {
			Record map[string]any `json:"record"`
		}
		if err := json.Unmarshal([]byte(out), &entries); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var recs []map[string]any
		for _, e := range entries {
			recs = append(recs, e.Record)
		}
		return recs
	}
	got := query("4711")
	if len(got) != 1 {
		t.Fatalf("query by patient 4711: %d events, want the one HL7 object", len(got))
	}
	if obj, _ := got[0]["object"].(map[string]any); obj == nil || obj["patient"] != token {
		t.Errorf("the event's patient is not the pseudonym that crossed (%s): %v", token, got[0])
	}
	if n := len(query("4712")); n != 0 {
		t.Errorf("another patient ID found %d events", n)
	}
	// The store never holds the patient's identity.
	b, _ := os.ReadFile(filepath.Join(dir, "controlplane", "events.log"))
	for _, phi := range []string{"4711^", "DOE", "JANE", "19700101"} {
		if strings.Contains(string(b), phi) {
			t.Errorf("%q is in the audit store", phi)
		}
	}
}
