package posture

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func examplePolicy(t testing.TB, name string) *Policy {
	t.Helper()
	p, err := LoadFiles(filepath.Join("..", "examples", "policies", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestExamplePolicies decides on the example rule sets as a sidecar in
// each jurisdiction would.
func TestExamplePolicies(t *testing.T) {
	later := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 12, 0, 0, 0, time.UTC) }
	type want struct {
		Verdict    Verdict
		Reasons    []Reason
		Profile    string
		LegalBasis string
	}
	allow := func(basis string) want {
		return want{Verdict: Allow, Reasons: []Reason{ReasonAllowed}, LegalBasis: basis}
	}
	deidentify := func(profile, basis string) want {
		return want{Verdict: Deidentify, Reasons: []Reason{ReasonDeidentified}, Profile: profile, LegalBasis: basis}
	}
	lapsed := func(profile string) want {
		return want{Verdict: Deidentify, Reasons: []Reason{ReasonLegalBasisExpired, ReasonDeidentified}, Profile: profile}
	}
	denied := func(rs ...Reason) want { return want{Verdict: Deny, Reasons: rs} }

	tests := []struct {
		file, name string
		local      string
		dir        Direction
		route      string
		peer       string
		now        time.Time // zero means testNow
		want       want
	}{
		// GDPR: a hospital in Berlin.
		{"gdpr.yaml", "to Japan under adequacy", "spiffe://charite.example.de/sidecar", Inbound, "pacs", "spiffe://keio.example.jp/radiology/ws-1", time.Time{}, allow("adequacy")},
		{"gdpr.yaml", "to Switzerland under adequacy", "spiffe://charite.example.de/sidecar", Inbound, "pacs", "spiffe://usz.example.ch/ws", time.Time{}, allow("adequacy")},
		{"gdpr.yaml", "to the UK under adequacy", "spiffe://charite.example.de/sidecar", Inbound, "pacs", "spiffe://nhs-trust.example.uk/ws", time.Time{}, allow("adequacy")},
		{"gdpr.yaml", "to the UK after the sunset", "spiffe://charite.example.de/sidecar", Inbound, "pacs", "spiffe://nhs-trust.example.uk/ws", later(2032, 1, 1), lapsed("gdpr-pseudonymize")},
		{"gdpr.yaml", "within the EEA", "spiffe://charite.example.de/sidecar", Inbound, "pacs", "spiffe://ous.example.no/ws", time.Time{}, allow("")},
		{"gdpr.yaml", "to the US pseudonymized", "spiffe://charite.example.de/sidecar", Inbound, "pacs", "spiffe://mgh.example.us/ws", time.Time{}, deidentify("gdpr-pseudonymize", "")},
		{"gdpr.yaml", "outside the allowed path", "spiffe://charite.example.de/sidecar", Inbound, "pacs", "spiffe://ap-hp.example.fr/billing/ws", time.Time{}, denied(ReasonIDNotAllowed)},
		{"gdpr.yaml", "records to Japan", "spiffe://charite.example.de/sidecar", Inbound, "ehr-fhir", "spiffe://keio.example.jp/ehr/app", time.Time{}, allow("adequacy")},
		{"gdpr.yaml", "push to Japan", "spiffe://charite.example.de/sidecar", Outbound, "pacs", "spiffe://keio.example.jp/pacs", time.Time{}, allow("adequacy")},
		{"gdpr.yaml", "a sidecar outside the policy", "spiffe://elsewhere.example/sidecar", Inbound, "pacs", "spiffe://keio.example.jp/ws", time.Time{}, denied(ReasonLocalJurisdictionUnmapped)},

		// PIPL: a hospital in Shanghai.
		{"pipl.yaml", "within China", "spiffe://ruijin.example.cn/sidecar", Inbound, "pacs", "spiffe://huashan.example.cn/ws", time.Time{}, allow("")},
		{"pipl.yaml", "to the EU after the security assessment", "spiffe://ruijin.example.cn/sidecar", Inbound, "pacs", "spiffe://charite.example.de/ws", time.Time{}, allow("pipl-assessment")},
		{"pipl.yaml", "to the EU once the assessment lapsed", "spiffe://ruijin.example.cn/sidecar", Inbound, "pacs", "spiffe://charite.example.de/ws", later(2027, 10, 1), lapsed("pipl-deidentify")},
		{"pipl.yaml", "to Singapore de-identified", "spiffe://ruijin.example.cn/sidecar", Inbound, "pacs", "spiffe://nuh.example.sg/ws", time.Time{}, deidentify("pipl-deidentify", "")},
		{"pipl.yaml", "to Hong Kong de-identified", "spiffe://ruijin.example.cn/sidecar", Inbound, "pacs", "spiffe://ruijin.example.cn/hk/research", time.Time{}, deidentify("pipl-deidentify", "")},
		{"pipl.yaml", "personal information to Singapore", "spiffe://ruijin.example.cn/sidecar", Inbound, "his", "spiffe://nuh.example.sg/ws", time.Time{}, deidentify("pipl-deidentify", "")},
		{"pipl.yaml", "genomics stay in China", "spiffe://ruijin.example.cn/sidecar", Inbound, "sequencing", "spiffe://mgh.example.us/ws", time.Time{}, denied(ReasonTransferDenied)},
		{"pipl.yaml", "genomics within China", "spiffe://ruijin.example.cn/sidecar", Inbound, "sequencing", "spiffe://huashan.example.cn/ws", time.Time{}, allow("")},

		// HIPAA: a covered entity.
		{"hipaa.yaml", "own site", "spiffe://mercy.example.org/sidecar", Inbound, "pacs", "spiffe://mercy.example.org/clinic-2/ws", time.Time{}, allow("")},
		{"hipaa.yaml", "business associate under a BAA", "spiffe://mercy.example.org/sidecar", Inbound, "pacs", "spiffe://radpartners.example.com/reader", time.Time{}, allow("baa")},
		{"hipaa.yaml", "business associate after the BAA ended", "spiffe://mercy.example.org/sidecar", Inbound, "pacs", "spiffe://radpartners.example.com/reader", later(2027, 7, 1), lapsed("hipaa-safe-harbor")},
		{"hipaa.yaml", "research partner under a DUA", "spiffe://mercy.example.org/sidecar", Inbound, "pacs", "spiffe://cancer-registry.example.edu/etl", time.Time{}, deidentify("hipaa-limited-data-set", "dta")},
		{"hipaa.yaml", "anyone else safe harbor", "spiffe://mercy.example.org/sidecar", Inbound, "pacs", "spiffe://telehealth.example.com/app", time.Time{}, deidentify("hipaa-safe-harbor", "")},
		{"hipaa.yaml", "offshore reader safe harbor", "spiffe://mercy.example.org/sidecar", Inbound, "pacs", "spiffe://reading.example.in/ws", time.Time{}, deidentify("hipaa-safe-harbor", "")},
		{"hipaa.yaml", "feed only for own sites", "spiffe://mercy.example.org/sidecar", Inbound, "hl7-feed", "spiffe://radpartners.example.com/reader", time.Time{}, denied(ReasonIDNotAllowed)},
		{"hipaa.yaml", "feed to the interface engine", "spiffe://mercy.example.org/sidecar", Inbound, "hl7-feed", "spiffe://mercy.example.org/interface-engine/1", time.Time{}, allow("")},
		{"hipaa.yaml", "feed not to a workstation", "spiffe://mercy.example.org/sidecar", Inbound, "hl7-feed", "spiffe://mercy.example.org/clinic-2/ws", time.Time{}, denied(ReasonConditionFalse)},
	}
	signer := exampleSigner(t)
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.name, func(t *testing.T) {
			p := examplePolicy(t, tt.file)
			e := newEngine(t, p)
			now := tt.now
			if now.IsZero() {
				now = testNow
			}
			req := Request{
				Route:        tt.route,
				Direction:    tt.dir,
				PeerID:       id(tt.peer),
				PeerSPKIHash: spki(tt.peer),
				LocalID:      id(tt.local),
				Now:          now,
			}
			if r, ok := p.Route(tt.dir, tt.route); ok && r.Profile != "" {
				c := goodClaims(tt.peer)
				shift := now.Sub(testNow)
				c.IssuedAt, c.Expiry = c.IssuedAt.Add(shift), c.Expiry.Add(shift)
				c.EDR.LastHeartbeat, c.LastPatch = c.EDR.LastHeartbeat.Add(shift), c.LastPatch.Add(shift)
				req.PostureToken = issue(t, signer, c)
			}
			d := e.Decide(req)
			got := want{Verdict: d.Verdict, Reasons: d.Reasons, Profile: d.Profile, LegalBasis: d.LegalBasis.Type}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
		})
	}
}

// Each example is a complete policy on its own.
func TestExamplePoliciesLoadSeparately(t *testing.T) {
	for _, f := range []string{"gdpr.yaml", "pipl.yaml", "hipaa.yaml"} {
		p := examplePolicy(t, f)
		if p.Version == "" || len(p.Routes) == 0 || len(p.Rules) == 0 || len(p.Profiles) == 0 {
			t.Errorf("%s: incomplete policy: %d routes, %d rules, %d profiles", f, len(p.Routes), len(p.Rules), len(p.Profiles))
		}
	}
}
