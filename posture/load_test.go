package posture

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fieldErrors lists the problems in a policy error, one string each.
func fieldErrors(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	if !strings.HasPrefix(err.Error(), "posture: ") {
		t.Errorf("error %q lacks the package prefix", err)
	}
	var out []string
	var walk func(error)
	walk = func(e error) {
		if fe, ok := e.(*FieldError); ok {
			out = append(out, fe.Error())
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Error("errors.As finds no *FieldError")
	}
	return out
}

const header = "apiVersion: medgate.io/v1\n"

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "unknown jurisdiction in a rule",
			yaml: `apiVersion: medgate.io/v1
kind: Jurisdictions
metadata: {name: sites}
spec: {codes: [EU, JP]}
---
apiVersion: medgate.io/v1
kind: ResidencyRules
metadata: {name: transfers}
spec:
  rules:
    - {dataClass: imaging, from: EU, to: EU, action: allow}
    - {dataClass: imaging, from: EU, to: JP, action: allow}
    - dataClass: imaging
      from: EU
      to: XX
      action: allow
`,
			want: []string{`policy.yaml:15: spec.rules[2].to: unknown jurisdiction "XX"`},
		},
		{
			name: "every problem at once",
			yaml: header + `kind: AccessPolicy
metadata: {name: pacs}
spec:
  dataClass: Imaging
  allow: ["spiffe://a.example/x*", "spiffe://b.example/*"]
  postureProfile: missing
  colour: blue
---
apiVersion: medgate.io/v2
kind: Jurisdictions
metadata: {name: sites}
spec:
  codes: [EU, eu]
  bindings:
    - {id: "spiffe://a.example/*", jurisdiction: EU}
    - {id: "spiffe://a.example/*", jurisdiction: EU}
    - {id: "spiffe://c.example/*", jurisdiction: US}
`,
			want: []string{
				`policy.yaml:5: spec.dataClass: "Imaging" is not a valid data class (lower case letters, digits, '.', '_' and '-')`,
				`policy.yaml:6: spec.allow[0]: SPIFFE ID pattern "spiffe://a.example/x*": '*' is only allowed as a final path segment`,
				`policy.yaml:7: spec.postureProfile: unknown PostureProfile "missing"`,
				`policy.yaml:8: spec.colour: unknown field, want one of route, direction, dataClass, allow, postureProfile, when, dryRun`,
				`policy.yaml:10: apiVersion: want "medgate.io/v1", got "medgate.io/v2"`,
				`policy.yaml:14: spec.codes[1]: "eu" is not a jurisdiction code (upper case letters and digits, such as EU or US)`,
				`policy.yaml:17: spec.bindings[1].id: spiffe://a.example/* already bound at policy.yaml:16`,
				`policy.yaml:18: spec.bindings[2].jurisdiction: unknown jurisdiction "US" (declare it in spec.codes)`,
			},
		},
		{
			name: "document shape",
			yaml: `kind: Policy
metadata: {}
---
apiVersion: medgate.io/v1
kind: MaskingProfile
metadata: {name: Bad_Name}
spec: {}
---
- a list
`,
			want: []string{
				`policy.yaml:1: apiVersion: required`,
				`policy.yaml:1: kind: unknown kind "Policy", want one of AccessPolicy, PostureProfile, Jurisdictions, ResidencyRules, MaskingProfile`,
				`policy.yaml:1: spec: required`,
				`policy.yaml:2: metadata.name: required`,
				`policy.yaml:6: metadata.name: "Bad_Name" is not a valid name (lower case letters, digits, '-' and '.')`,
				`policy.yaml:9: want a mapping, got a list`,
			},
		},
		{
			name: "rule actions and legal bases",
			yaml: header + `kind: Jurisdictions
metadata: {name: sites}
spec: {codes: [EU, US, CN]}
---
apiVersion: medgate.io/v1
kind: ResidencyRules
metadata: {name: transfers}
spec:
  rules:
    - {dataClass: phi, from: EU, to: US, action: deidentify}
    - {dataClass: phi, from: EU, to: CN, action: deidentify, maskingProfile: nope}
    - dataClass: phi
      from: US
      to: CN
      action: deny
      legalBasis: {type: scc, reference: x}
    - dataClass: [phi, "*"]
      from: ["*", EU]
      to: US
      action: permit
    - dataClass: records
      from: EU
      to: US
      action: allow
      legalBasis: {type: treaty, reference: x, expires: next year}
`,
			want: []string{
				`policy.yaml:11: spec.rules[0].maskingProfile: required when action is deidentify`,
				`policy.yaml:12: spec.rules[1].maskingProfile: unknown MaskingProfile "nope"`,
				`policy.yaml:17: spec.rules[2].legalBasis: a deny rule needs no legal basis`,
				`policy.yaml:18: spec.rules[3].dataClass[1]: "*" must stand alone`,
				`policy.yaml:19: spec.rules[3].from[0]: "*" must stand alone`,
				`policy.yaml:21: spec.rules[3].action: want allow, deidentify or deny, got "permit"`,
				`policy.yaml:26: spec.rules[4].legalBasis.type: unknown legal basis type "treaty", want one of ` + strings.Join(LegalBasisTypes, ", "),
				`policy.yaml:26: spec.rules[4].legalBasis.expires: "next year" is not a date (2030-01-31) or an RFC 3339 time`,
			},
		},
		{
			name: "ambiguous rules",
			yaml: header + `kind: Jurisdictions
metadata: {name: sites}
spec: {codes: [EU, US, CN]}
---
apiVersion: medgate.io/v1
kind: MaskingProfile
metadata: {name: m}
spec: {}
---
apiVersion: medgate.io/v1
kind: ResidencyRules
metadata: {name: transfers}
spec:
  rules:
    - {dataClass: phi, from: EU, to: "*", action: deidentify, maskingProfile: m}
    - {dataClass: phi, from: [US, EU], to: "*", action: deny}
    - {dataClass: phi, from: US, to: CN, action: allow}
    - {dataClass: phi, from: EU, to: CN, action: deny}
`,
			want: []string{
				`policy.yaml:17: spec.rules[1]: overlaps the rule at policy.yaml:16 and is as specific; name data classes or jurisdictions so one rule applies`,
			},
		},
		{
			name: "posture profile",
			yaml: header + `kind: PostureProfile
metadata: {name: p}
spec:
  issuers:
    - name: https://mdm.example
      jwks:
        keys:
          - {kty: oct, kid: k1, k: c2VjcmV0}
          - {kty: OKP, crv: Ed25519, x: pbQMWCFR3DHQ2crlEMDVwJ6YwzluOjdBeL0PxYPcIig}
          - {kty: OKP, crv: Ed25519, kid: k3, x: pbQMWCFR3DHQ2crlEMDVwJ6YwzluOjdBeL0PxYPcIig, d: EXAMPLE_SEED}
    - name: https://other.example
      jwks: {keys: []}
  minOSVersion: {ubuntu: jammy}
  requireDiskEncryption: "yes"
  maxPatchAge: 30 days
  maxTokenAge: -1h
  edr: {name: falcon}
`,
			want: []string{
				`policy.yaml:9: spec.issuers[0].jwks.keys[0]: a symmetric key; posture tokens are signed with EC P-256 or Ed25519 keys`,
				`policy.yaml:10: spec.issuers[0].jwks.keys[1]: no kid`,
				`policy.yaml:11: spec.issuers[0].jwks.keys[2]: a private key; give only the public key`,
				`policy.yaml:13: spec.issuers[1].jwks.keys: want a non-empty list of keys`,
				`policy.yaml:14: spec.minOSVersion.ubuntu: "jammy" is not a dotted version such as 22.04`,
				`policy.yaml:15: spec.requireDiskEncryption: want true or false, got a str`,
				`policy.yaml:16: spec.maxPatchAge: "30 days" is not a duration such as 15m, 12h or 30d`,
				`policy.yaml:17: spec.maxTokenAge: must be positive`,
				`policy.yaml:18: spec.edr.name: unknown field, want one of names, maxHeartbeatAge`,
			},
		},
		{
			name: "routes",
			yaml: header + `kind: AccessPolicy
metadata: {name: a}
spec: {route: pacs, dataClass: imaging, allow: "spiffe://a.example/*"}
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: b}
spec: {route: pacs, dataClass: imaging, allow: "spiffe://b.example/*"}
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: a}
spec: {route: other, dataClass: imaging, allow: []}
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: c}
spec: {direction: outbound, dataClass: imaging, allow: "spiffe://b.example/x", postureProfile: p, route: "bad route"}
`,
			want: []string{
				`policy.yaml:9: spec.route: inbound route "pacs" already defined at policy.yaml:4`,
				`policy.yaml:13: metadata.name: AccessPolicy "a" already defined at policy.yaml:1`,
				`policy.yaml:19: spec.route: "bad route" is not a valid route name (letters, digits, '.', '_' and '-')`,
				`policy.yaml:19: spec.postureProfile: outbound routes receive no posture token; set it on the inbound route`,
			},
		},
		{
			name: "when conditions",
			yaml: header + `kind: AccessPolicy
metadata: {name: a}
spec:
  dataClass: imaging
  allow: "spiffe://a.example/*"
  when: peer.id + 1 == "x"
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: b}
spec:
  dataClass: imaging
  allow: "spiffe://a.example/*"
  when: peer.jurisdiction
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: c}
spec:
  dataClass: imaging
  allow: "spiffe://a.example/*"
  when: |
    peer.id.startsWith("spiffe://a.example/")
      && patient.name == "x"
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: d}
spec:
  dataClass: imaging
  allow: "spiffe://a.example/*"
  when: '[1, 2, 3, 4].all(x, [1, 2, 3, 4].all(y, peer.id.matches(peer.path + string(x))))'
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: e}
spec:
  dataClass: imaging
  allow: "spiffe://a.example/*"
  when: 'peer.id == "LONG"'
  dryRun: "yes"
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: f}
spec:
  dataClass: imaging
  allow: "spiffe://a.example/*"
  when: peer.id.startsWith(
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: g}
spec:
  dataClass: imaging
  allow: "spiffe://a.example/*"
  when: ""
`,
			want: []string{
				`policy.yaml:7: spec.when: column 9 of the expression: found no matching overload for '_+_' applied to '(string, int)'`,
				`policy.yaml:15: spec.when: want a bool expression, got string`,
				`policy.yaml:25: spec.when: column 6 of the expression: undeclared reference to 'patient'`,
				`policy.yaml:33: spec.when: too costly: the worst case is estimated at unbounded, the limit is 10000 (bound lists and strings, avoid nested loops and regular expressions built at run time)`,
				`policy.yaml:41: spec.when: 2061 bytes long; a when expression may have at most 2048`,
				`policy.yaml:42: spec.dryRun: want true or false, got a str`,
				`policy.yaml:50: spec.when: column 20 of the expression: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', ')', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}`,
				`policy.yaml:58: spec.when: must not be empty`,
			},
		},
		{
			name: "yaml syntax",
			yaml: header + "kind: AccessPolicy\nmetadata: {name: a\nspec: x\n",
			// yaml.v3 counts this line from the flow mapping's start, zero-based.
			want: []string{`policy.yaml:2: yaml: did not find expected ',' or '}'`},
		},
		{
			name: "aliases",
			yaml: header + "kind: AccessPolicy\nmetadata: {name: a}\nspec:\n  dataClass: &c imaging\n  route: *c\n  allow: [\"spiffe://a.example/*\"]\n",
			want: []string{`policy.yaml:6: YAML aliases are not supported in policy`},
		},
		{
			name: "duplicate keys",
			yaml: header + "kind: AccessPolicy\nkind: AccessPolicy\nmetadata: {name: a}\nspec: {dataClass: x, allow: \"spiffe://a.example/*\"}\n",
			want: []string{`policy.yaml:3: kind: defined twice`},
		},
		{
			name: "nothing",
			yaml: "# only a comment\n---\n",
			want: []string{`policy.yaml: no policy documents`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seed := exampleKey().Seed()
			doc := strings.ReplaceAll(tt.yaml, "EXAMPLE_SEED", base64.RawURLEncoding.EncodeToString(seed))
			doc = strings.ReplaceAll(doc, "LONG", strings.Repeat("x", MaxConditionLength))
			p, err := Parse("policy.yaml", []byte(doc))
			if p != nil {
				t.Error("a policy came back with the error")
			}
			if diff := cmp.Diff(tt.want, fieldErrors(t, err)); diff != "" {
				t.Errorf("errors (-want +got):\n%s\nfull error:\n%v", diff, err)
			}
		})
	}
}

func TestLoadFilesErrorsNameFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	a := write("a.yaml", header+"kind: Jurisdictions\nmetadata: {name: j}\nspec: {codes: [EU]}\n")
	b := write("b.yml", header+"kind: ResidencyRules\nmetadata: {name: r}\nspec:\n  rules:\n    - {dataClass: x, from: EU, to: JP, action: allow}\n")
	write("notes.txt", "not policy")
	_, err := LoadFiles(dir)
	want := []string{b + `:6: spec.rules[0].to: unknown jurisdiction "JP"`}
	if diff := cmp.Diff(want, fieldErrors(t, err)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	_, err = LoadFiles(a, filepath.Join(dir, "missing.yaml"))
	want = []string{filepath.Join(dir, "missing.yaml") + ": cannot read: no such file or directory"}
	if diff := cmp.Diff(want, fieldErrors(t, err)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	if _, err := LoadFiles(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no *.yaml or *.yml file") {
		t.Errorf("empty directory: %v", err)
	}
}

func TestPolicyVersion(t *testing.T) {
	base := testPolicyYAML(t)
	p := testPolicy(t)
	if len(p.Version) != 16 {
		t.Errorf("Version %q, want 16 hex digits", p.Version)
	}
	docs := strings.Split(base, "\n---\n")

	// The same content in another order, another layout, other files and
	// with comments has the same version.
	dir := t.TempDir()
	for i, d := range docs {
		body := "# file " + string(rune('a'+i)) + "\n" + d + "\n"
		if err := os.WriteFile(filepath.Join(dir, string(rune('z'-i))+".yaml"), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	q, err := LoadFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if q.Version != p.Version {
		t.Errorf("same content split over files: version %s, want %s", q.Version, p.Version)
	}
	reordered := strings.Replace(base,
		`["spiffe://eu.example/*", "spiffe://jp.example/*", "spiffe://uk.example/*"]`,
		"\n    - spiffe://uk.example/*\n    - spiffe://eu.example/*\n    - spiffe://jp.example/*", 1)
	if r, err := Parse("r.yaml", []byte(reordered)); err != nil || r.Version != p.Version {
		t.Errorf("reordered allow list: %v, version changed: %v", err, r != nil && r.Version != p.Version)
	}

	changed, err := Parse("c.yaml", []byte(strings.Replace(base, "maxTokenAge: 1h", "maxTokenAge: 2h", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if changed.Version == p.Version {
		t.Error("a changed requirement kept the version")
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"22.04", "22.04", 0},
		{"22.10", "22.04", 1},
		{"9", "9.0", 0},
		{"9.2", "9.10", -1},
		{"10.0.19045", "10.0.22631", -1},
		{"12", "11.9", 1},
		{"2-rc1", "2", 0},
	}
	for _, tt := range tests {
		a, ok1 := parseVersion(tt.a)
		b, ok2 := parseVersion(tt.b)
		if !ok1 || !ok2 {
			t.Fatalf("parse %q or %q failed", tt.a, tt.b)
		}
		if got := compareVersions(a, b); got != tt.want {
			t.Errorf("compare(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
	for _, bad := range []string{"", "noble", ".1", "1..2", "1.2.3.4.5.6.7.8.9", "12345678901"} {
		if _, ok := parseVersion(bad); ok {
			t.Errorf("parseVersion(%q) accepted", bad)
		}
	}
}

func TestJurisdictionsAcrossDocuments(t *testing.T) {
	p, err := Parse("j.yaml", []byte(header+`kind: Jurisdictions
metadata: {name: codes}
spec: {codes: [EU, JP]}
---
apiVersion: medgate.io/v1
kind: Jurisdictions
metadata: {name: japan}
spec:
  bindings:
    - {id: "spiffe://jp.example/*", jurisdiction: JP}
    - {id: "spiffe://jp.example/eu-office/*", jurisdiction: EU}
    - {id: "spiffe://jp.example/eu-office/gw", jurisdiction: JP}
`))
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"spiffe://jp.example/ws":               "JP",
		"spiffe://jp.example/eu-office/ws":     "EU",
		"spiffe://jp.example/eu-office/gw":     "JP",
		"spiffe://jp.example/eu-office":        "JP",
		"spiffe://jp.example/eu-office/gw/sub": "EU",
	} {
		if got, ok := p.Jurisdiction(id(in)); !ok || got != want {
			t.Errorf("Jurisdiction(%s) = %q, %v; want %q", in, got, ok, want)
		}
	}
	if got, ok := p.Jurisdiction(id("spiffe://other.example/ws")); ok {
		t.Errorf("unbound ID mapped to %q", got)
	}
}
