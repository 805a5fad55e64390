package posture

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// condPolicy is the test policy plus one access policy, "cond", carrying
// spec (indented by two spaces).
func condPolicy(t *testing.T, spec string) *Policy {
	t.Helper()
	doc := testPolicyYAML(t) + "---\napiVersion: medgate.io/v1\nkind: AccessPolicy\nmetadata: {name: cond}\nspec:\n" + spec
	p, err := Parse("cond.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDecideCondition(t *testing.T) {
	const (
		lab   = "spiffe://eu.example/lab"
		ward  = "spiffe://eu.example/ward-3"
		jp    = "spiffe://jp.example/workstation-1"
		jpPax = "spiffe://jp.example/pacs"
	)
	records := "  dataClass: records\n  allow: [\"spiffe://eu.example/*\"]\n"
	imaging := "  dataClass: imaging\n  allow: [\"spiffe://jp.example/*\"]\n  postureProfile: strict\n"
	allowedEU := outcome{Verdict: Allow, Reasons: []Reason{ReasonAllowed}, LocalJurisdiction: "EU", PeerJurisdiction: "EU"}
	deniedEU := func(rs ...Reason) outcome {
		return outcome{Verdict: Deny, Reasons: rs, LocalJurisdiction: "EU", PeerJurisdiction: "EU"}
	}
	tests := []struct {
		name string
		spec string
		req  Request
		want outcome
	}{
		{
			name: "true",
			spec: records + "  when: peer.id.endsWith(\"/lab\")\n",
			req:  Request{PeerID: id(lab)},
			want: allowedEU,
		},
		{
			name: "false",
			spec: records + "  when: peer.id.endsWith(\"/lab\")\n",
			req:  Request{PeerID: id(ward)},
			want: deniedEU(ReasonConditionFalse),
		},
		{
			name: "evaluation error",
			spec: records + "  when: int(route.name) > 0\n",
			req:  Request{PeerID: id(lab)},
			want: deniedEU(ReasonConditionError),
		},
		{
			name: "identity, route and jurisdiction variables",
			spec: records + `  when: >-
    peer.id == "spiffe://eu.example/lab" && peer.trust_domain == "eu.example" &&
    peer.path == "/lab" && peer.jurisdiction == "EU" &&
    local.id == "spiffe://eu.example/sidecar" && local.trust_domain == "eu.example" &&
    local.jurisdiction == "EU" && route.name == "cond" && route.direction == "inbound" &&
    route.data_class == "records" && !device.present && device.device_id == "" && !device.disk_encrypted
`,
			req:  Request{PeerID: id(lab)},
			want: allowedEU,
		},
		{
			name: "business hours, inside",
			spec: records + "  when: now.getHours(\"Europe/Berlin\") >= 8 && now.getHours(\"Europe/Berlin\") < 18\n",
			req:  Request{PeerID: id(lab), Now: testNow},
			want: allowedEU,
		},
		{
			name: "business hours, outside",
			spec: records + "  when: now.getHours(\"Europe/Berlin\") >= 8 && now.getHours(\"Europe/Berlin\") < 18\n",
			req:  Request{PeerID: id(lab), Now: testNow.Add(8 * time.Hour)},
			want: deniedEU(ReasonConditionFalse),
		},
		{
			name: "device variables from a verified token",
			spec: imaging + `  when: >-
    device.present && device.issuer == "https://posture.example.org" && device.device_id == "dev-0042" &&
    device.os_name == "ubuntu" && device.os_version == "24.04" && device.kernel.startsWith("6.8") &&
    device.disk_encrypted && device.firewall && device.screen_lock &&
    device.edr_running && device.edr_name == "falcon-sensor"
`,
			req:  Request{PeerID: id(jp), PostureToken: issue(t, exampleSigner(t), goodClaims(jp))},
			want: outcome{Verdict: Allow, Reasons: []Reason{ReasonAllowed}, LegalBasis: "adequacy", LocalJurisdiction: "EU", PeerJurisdiction: "JP"},
		},
		{
			name: "device absent when the token fails",
			spec: imaging + "  when: device.present\n",
			req:  Request{PeerID: id(jp), PostureToken: tamper(issue(t, exampleSigner(t), goodClaims(jp)))},
			want: outcome{Verdict: Deny, Reasons: []Reason{ReasonTokenBadSignature, ReasonConditionFalse}, LocalJurisdiction: "EU", PeerJurisdiction: "JP"},
		},
		{
			name: "reported with residency",
			spec: "  dataClass: records\n  allow: [\"spiffe://jp.example/*\"]\n  when: peer.jurisdiction == \"EU\"\n",
			req:  Request{PeerID: id(jp)},
			want: outcome{Verdict: Deny, Reasons: []Reason{ReasonConditionFalse, ReasonNoTransferRule}, LocalJurisdiction: "EU", PeerJurisdiction: "JP"},
		},
		{
			name: "outbound",
			spec: "  route: push\n  direction: outbound\n  dataClass: imaging\n  allow: [\"spiffe://jp.example/*\"]\n  when: route.direction == \"outbound\" && peer.path == \"/pacs\"\n",
			req:  Request{Direction: Outbound, Route: "push", PeerID: id(jpPax)},
			want: outcome{Verdict: Allow, Reasons: []Reason{ReasonAllowed}, LegalBasis: "adequacy", LocalJurisdiction: "EU", PeerJurisdiction: "JP"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, condPolicy(t, tt.spec))
			req := tt.req
			if req.Route == "" {
				req.Route = "cond"
			}
			req.PeerSPKIHash = spki(req.PeerID.String())
			req.LocalID = id(localID)
			got := e.Decide(req)
			if diff := cmp.Diff(tt.want, outcomeOf(got)); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
			if got.DryRun {
				t.Error("DryRun set on a route that is not in dry run")
			}
			if got.Enforced().Verdict != got.Verdict {
				t.Errorf("Enforced changed the verdict to %v", got.Enforced().Verdict)
			}
		})
	}
}

func TestConditionOnTheClockIsNotCached(t *testing.T) {
	p := condPolicy(t, "  dataClass: records\n  allow: [\"spiffe://eu.example/*\"]\n  when: now < timestamp(\"2026-11-01T12:00:30Z\")\n")
	e := newEngine(t, p)
	req := Request{Route: "cond", PeerID: id("spiffe://eu.example/lab"), LocalID: id(localID), Now: testNow}
	d := e.Decide(req)
	if !d.Admitted() {
		t.Fatalf("first decision: %v %v", d.Verdict, d.Reasons)
	}
	if want := testNow.Add(ConditionRecheck); !d.ValidUntil.Equal(want) {
		t.Errorf("ValidUntil = %v, want %v", d.ValidUntil, want)
	}
	req.Now = testNow.Add(45 * time.Second)
	if d := e.Decide(req); d.Admitted() || !d.Has(ReasonConditionFalse) {
		t.Errorf("after the condition turned false: %v %v", d.Verdict, d.Reasons)
	}
	if got := e.CacheStats(); got != (CacheStats{}) {
		t.Errorf("cache used for a condition on the clock: %+v", got)
	}

	// A condition that does not read the clock is cached like any other.
	e = newEngine(t, condPolicy(t, "  dataClass: records\n  allow: [\"spiffe://eu.example/*\"]\n  when: peer.path == \"/lab\"\n"))
	req.Now = testNow
	for range 2 {
		if d := e.Decide(req); !d.Admitted() || !d.ValidUntil.IsZero() {
			t.Fatalf("got %v %v until %v", d.Verdict, d.Reasons, d.ValidUntil)
		}
	}
	if got := e.CacheStats(); got != (CacheStats{Hits: 1, Misses: 1}) {
		t.Errorf("stats = %+v, want one miss then one hit", got)
	}
}

func TestDryRun(t *testing.T) {
	const (
		lab  = "spiffe://eu.example/lab"
		ward = "spiffe://eu.example/ward-3"
		us   = "spiffe://us.example/reader"
	)
	type enforced struct {
		Verdict Verdict
		Profile string
	}
	tests := []struct {
		name     string
		spec     string
		peer     string
		token    bool
		want     outcome
		enforced enforced
	}{
		{
			name:     "condition false is admitted",
			spec:     "  dataClass: records\n  allow: [\"spiffe://eu.example/*\"]\n  when: peer.id.endsWith(\"/lab\")\n",
			peer:     ward,
			want:     outcome{Verdict: Deny, Reasons: []Reason{ReasonConditionFalse}, LocalJurisdiction: "EU", PeerJurisdiction: "EU"},
			enforced: enforced{Allow, ""},
		},
		{
			name:     "admitted as usual",
			spec:     "  dataClass: records\n  allow: [\"spiffe://eu.example/*\"]\n  when: peer.id.endsWith(\"/lab\")\n",
			peer:     lab,
			want:     outcome{Verdict: Allow, Reasons: []Reason{ReasonAllowed}, LocalJurisdiction: "EU", PeerJurisdiction: "EU"},
			enforced: enforced{Allow, ""},
		},
		{
			name:     "masked where residency says so, though the allow list does not name the peer",
			spec:     "  dataClass: imaging\n  allow: [\"spiffe://eu.example/*\"]\n",
			peer:     us,
			want:     outcome{Verdict: Deny, Reasons: []Reason{ReasonIDNotAllowed}, Profile: "pseudonymize", LocalJurisdiction: "EU", PeerJurisdiction: "US"},
			enforced: enforced{Deidentify, "pseudonymize"},
		},
		{
			name:     "masked where residency says so, posture failing",
			spec:     "  dataClass: imaging\n  allow: [\"spiffe://us.example/*\"]\n  postureProfile: strict\n",
			peer:     us,
			want:     outcome{Verdict: Deny, Reasons: []Reason{ReasonTokenMissing}, Profile: "pseudonymize", LocalJurisdiction: "EU", PeerJurisdiction: "US"},
			enforced: enforced{Deidentify, "pseudonymize"},
		},
		{
			name:     "masked when admitted",
			spec:     "  dataClass: imaging\n  allow: [\"spiffe://us.example/*\"]\n  postureProfile: strict\n",
			peer:     us,
			token:    true,
			want:     outcome{Verdict: Deidentify, Reasons: []Reason{ReasonDeidentified}, Profile: "pseudonymize", LocalJurisdiction: "EU", PeerJurisdiction: "US"},
			enforced: enforced{Deidentify, "pseudonymize"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, condPolicy(t, tt.spec+"  dryRun: true\n"))
			req := Request{Route: "cond", PeerID: id(tt.peer), PeerSPKIHash: spki(tt.peer), LocalID: id(localID)}
			if tt.token {
				req.PostureToken = issue(t, exampleSigner(t), goodClaims(tt.peer))
			}
			got := e.Decide(req)
			if diff := cmp.Diff(tt.want, outcomeOf(got)); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
			if !got.DryRun {
				t.Error("DryRun not set")
			}
			en := got.Enforced()
			if diff := cmp.Diff(tt.enforced, enforced{en.Verdict, en.Profile}); diff != "" {
				t.Errorf("enforced (-want +got):\n%s", diff)
			}
			if !en.DryRun || !slices.Equal(en.Reasons, got.Reasons) {
				t.Errorf("Enforced lost what was decided: %+v", en)
			}
		})
	}
}

func TestWhenAndDryRunChangeTheVersion(t *testing.T) {
	base := "  dataClass: records\n  allow: [\"spiffe://eu.example/*\"]\n"
	versions := map[string]string{}
	for name, spec := range map[string]string{
		"none":          base,
		"when":          base + "  when: peer.path == \"/lab\"\n",
		"other when":    base + "  when: peer.path == \"/ward\"\n",
		"dry run":       base + "  dryRun: true\n",
		"when, dry run": base + "  when: peer.path == \"/lab\"\n  dryRun: true\n",
	} {
		p := condPolicy(t, spec)
		for other, v := range versions {
			if v == p.Version {
				t.Errorf("%s and %s have the same version %s", name, other, v)
			}
		}
		versions[name] = p.Version
	}
	// The expression's surrounding whitespace is not content; dryRun: false
	// is the default.
	same := map[string]string{
		"when": base + "  when: |\n    peer.path == \"/lab\"\n",
		"none": base + "  dryRun: false\n",
	}
	for name, spec := range same {
		if p := condPolicy(t, spec); p.Version != versions[name] {
			t.Errorf("%s written otherwise: version %s, want %s", name, p.Version, versions[name])
		}
	}
	if p := condPolicy(t, base+"  when: peer.path == \"/lab\"\n  dryRun: true\n"); !strings.Contains(string(p.Canonical()), `"when":"peer.path == \"/lab\"","dry_run":true`) {
		t.Errorf("canonical form lacks when and dry_run: %s", p.Canonical())
	}
}
