package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportBoundaries keeps dependencies pointing one way: cmd -> proxy ->
// identity, posture, crypto/*. Each rule names why.
func TestImportBoundaries(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "github.com/medgate/medgate/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/medgate/medgate/"
	rules := []struct {
		pkg       string // prefix of the importing package
		forbidden string // prefix of the import it may not have
		why       string
	}{
		{mod + "crypto/", mod, "crypto packages stand alone: no project imports"},
		{mod + "crypto/", "log", "crypto never logs; it returns errors"},
		{mod + "identity", mod + "posture", "identity says who a peer is, never what it may do"},
		{mod + "identity", mod + "proxy", "identity is below the data path"},
		{mod + "posture", mod + "proxy", "posture decides; it never touches bytes on the wire"},
		{mod + "posture", mod + "crypto/", "posture has no use for data keys"},
		{mod + "controlplane", mod + "proxy", "control-plane code never imports the sidecar's data path"},
		{mod, mod + "cmd/", "nothing imports the command"},
		{mod, mod + "examples", "examples are deployments, not library code"},
		{mod, mod + "bench", "benchmarks are not library code"},
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		for _, imp := range imports {
			for _, r := range rules {
				if !strings.HasPrefix(pkg, r.pkg) || !strings.HasPrefix(imp, r.forbidden) {
					continue
				}
				// A package may import its own subpackages.
				if strings.HasPrefix(imp, pkg+"/") || strings.HasPrefix(imp, strings.TrimSuffix(r.pkg, "/")+"/") && r.forbidden == mod {
					continue
				}
				if imp == "log/slog" && r.forbidden == "log" {
					continue // LogValue methods redact; they do not log
				}
				t.Errorf("%s imports %s: %s", pkg, imp, r.why)
			}
		}
	}
}
