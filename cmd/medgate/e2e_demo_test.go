package main

import (
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
