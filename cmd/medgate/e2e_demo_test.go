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
	for _, want := range []string{"SHA-256 identical at both ends", "laptop-7 refused before any byte reached the PACS: disk_not_encrypted", "billing refused before any byte reached the PACS: id_not_allowed", "\nok\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}
