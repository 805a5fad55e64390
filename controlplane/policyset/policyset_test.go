package policyset

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/medgate/medgate/controlplane/api"
)

const base = `apiVersion: medgate.io/v1
kind: Jurisdictions
metadata: {name: sites}
spec:
  codes: [EU]
  bindings:
    - {id: "spiffe://h.example/*", jurisdiction: EU}
---
apiVersion: medgate.io/v1
kind: ResidencyRules
metadata: {name: r}
spec:
  rules:
    - {dataClass: imaging, from: EU, to: EU, action: allow}
`

func access(name, sidecars string) string {
	ann := ""
	if sidecars != "" {
		ann = "\n  annotations: {medgate.io/sidecars: \"" + sidecars + "\"}"
	}
	return `---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata:
  name: ` + name + ann + `
spec:
  route: ` + name + `
  dataClass: imaging
  allow: ["spiffe://h.example/lab/*"]
`
}

func TestForNodeSelectsAccessPolicies(t *testing.T) {
	docs := []*api.Document{{Name: "p.yaml", Yaml: []byte(base + access("pacs", "spiffe://h.example/pacs") + access("ris", "spiffe://h.example/ris,spiffe://h.example/other/*") + access("all", ""))}}
	if _, err := Compile(docs); err != nil {
		t.Fatal(err)
	}
	routes := func(node string) []string {
		_, p, err := ForNode(Version(docs), docs, spiffeid.RequireFromString(node))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range p.Routes {
			names = append(names, r.Name)
		}
		return names
	}
	for node, want := range map[string]string{
		"spiffe://h.example/pacs":      "all pacs",
		"spiffe://h.example/ris":       "all ris",
		"spiffe://h.example/other/x":   "all ris",
		"spiffe://h.example/somewhere": "all",
	} {
		if got := strings.Join(routes(node), " "); got != want {
			t.Errorf("%s gets routes %q, want %q", node, got, want)
		}
	}
	// Same content, same version; different sidecars, different sets.
	a, _, _ := ForNode("v", docs, spiffeid.RequireFromString("spiffe://h.example/pacs"))
	b, _, _ := ForNode("v", docs, spiffeid.RequireFromString("spiffe://h.example/pacs"))
	c, _, _ := ForNode("v", docs, spiffeid.RequireFromString("spiffe://h.example/ris"))
	if a.Version != b.Version || a.Version == c.Version {
		t.Errorf("versions: %s %s %s", a.Version, b.Version, c.Version)
	}
}

func TestCompileErrors(t *testing.T) {
	for name, docs := range map[string][]*api.Document{
		"no documents":           nil,
		"unnamed":                {{Yaml: []byte(base)}},
		"twice":                  {{Name: "a", Yaml: []byte(base)}, {Name: "a", Yaml: []byte(base)}},
		"selector on other kind": {{Name: "a", Yaml: []byte(strings.Replace(base, "metadata: {name: sites}", "metadata: {name: sites, annotations: {medgate.io/sidecars: \"spiffe://h.example/x\"}}", 1))}},
		"bad selector":           {{Name: "a", Yaml: []byte(base + access("pacs", "not-an-id"))}},
		"empty selector":         {{Name: "a", Yaml: []byte(base + access("pacs", " "))}},
		"invalid policy":         {{Name: "a", Yaml: []byte(base + "---\nkind: Nonsense\n")}},
	} {
		if _, err := Compile(docs); err == nil {
			t.Errorf("%s: compiled", name)
		}
	}
}

func TestVersionIgnoresOrder(t *testing.T) {
	a := []*api.Document{{Name: "a", Yaml: []byte("x")}, {Name: "b", Yaml: []byte("y")}}
	b := []*api.Document{a[1], a[0]}
	if Version(a) != Version(b) {
		t.Error("order changes the version")
	}
	// Names and contents cannot trade bytes.
	c := []*api.Document{{Name: "ax", Yaml: []byte("")}, {Name: "b", Yaml: []byte("y")}}
	if Version(a) == Version(c) {
		t.Error("a name/content shift kept the version")
	}
}

// FuzzPolicySet compiles arbitrary documents and selects them for a node:
// never a panic, and a set built for a node always compiles again to the
// version it claims.
func FuzzPolicySet(f *testing.F) {
	f.Add([]byte(base+access("pacs", "spiffe://h.example/pacs")+access("all", "")), "spiffe://h.example/pacs")
	for _, p := range []string{"../../examples/policies/gdpr.yaml", "../../examples/policies/pipl.yaml", "../../examples/policies/hipaa.yaml"} {
		if b, err := os.ReadFile(filepath.Clean(p)); err == nil {
			f.Add(b, "spiffe://charite.example.de/pacs")
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, node string) {
		id, err := spiffeid.FromString(node)
		if err != nil {
			return
		}
		docs := []*api.Document{{Name: "f.yaml", Yaml: data}}
		if _, err := Compile(docs); err != nil {
			return
		}
		set, p, err := ForNode("v", docs, id)
		if err != nil {
			return
		}
		again, err := Compile(set.Documents)
		if err != nil {
			t.Fatalf("a node's set does not compile: %v", err)
		}
		if again.Version != p.Version || set.Version != p.Version {
			t.Fatalf("versions differ: %s %s %s", set.Version, p.Version, again.Version)
		}
	})
}
