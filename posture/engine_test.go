package posture

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
)

const localID = "spiffe://eu.example/sidecar"

// outcome is the part of a Decision the table tests compare.
type outcome struct {
	Verdict           Verdict
	Reasons           []Reason
	Profile           string
	LegalBasis        string
	LocalJurisdiction string
	PeerJurisdiction  string
}

func outcomeOf(d Decision) outcome {
	return outcome{
		Verdict:           d.Verdict,
		Reasons:           d.Reasons,
		Profile:           d.Profile,
		LegalBasis:        d.LegalBasis.Type,
		LocalJurisdiction: d.LocalJurisdiction,
		PeerJurisdiction:  d.PeerJurisdiction,
	}
}

// rawToken builds a compact JWS by hand, for algorithms Issue refuses.
func rawToken(t *testing.T, header map[string]any, claims Claims, sign func(input []byte) []byte) []byte {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString(h) + "." + enc.EncodeToString(p)
	var sig []byte
	if sign != nil {
		sig = sign([]byte(input))
	}
	return []byte(input + "." + enc.EncodeToString(sig))
}

func TestDecide(t *testing.T) {
	p := testPolicy(t)
	example := exampleSigner(t)
	ec := ecSigner(t, "ec-1")
	rogue := edSigner(t, "rogue issuer", "rogue-1")
	impostor := edSigner(t, "impostor", "example-2026") // a trusted kid on the wrong key

	const peer = "spiffe://jp.example/workstation-1"
	tok := func(mod func(*Claims)) []byte {
		c := goodClaims(peer)
		if mod != nil {
			mod(&c)
		}
		return issue(t, example, c)
	}
	allowedJP := outcome{Verdict: Allow, Reasons: []Reason{ReasonAllowed}, LegalBasis: "adequacy", LocalJurisdiction: "EU", PeerJurisdiction: "JP"}
	denyJP := func(rs ...Reason) outcome {
		return outcome{Verdict: Deny, Reasons: rs, LocalJurisdiction: "EU", PeerJurisdiction: "JP"}
	}

	tests := []struct {
		name   string
		policy *Policy // nil means p
		noPol  bool
		req    Request
		want   outcome
	}{
		{
			name: "allow",
			req:  Request{PostureToken: tok(nil)},
			want: allowedJP,
		},
		{
			name: "allow ES256 issuer",
			req: Request{PostureToken: func() []byte {
				c := goodClaims(peer)
				c.Issuer = "https://ec.example"
				return issue(t, ec, c)
			}()},
			want: allowedJP,
		},
		{
			name: "deidentify elsewhere",
			req: Request{
				PeerID:       id("spiffe://us.example/reader"),
				PeerSPKIHash: spki("spiffe://us.example/reader"),
				PostureToken: issue(t, example, goodClaims("spiffe://us.example/reader")),
			},
			want: outcome{Verdict: Deidentify, Reasons: []Reason{ReasonDeidentified}, Profile: "pseudonymize", LocalJurisdiction: "EU", PeerJurisdiction: "US"},
		},
		{
			name: "same jurisdiction",
			req: Request{
				PeerID:       id("spiffe://eu.example/ward-3"),
				PeerSPKIHash: spki("spiffe://eu.example/ward-3"),
				PostureToken: issue(t, example, goodClaims("spiffe://eu.example/ward-3")),
			},
			want: outcome{Verdict: Allow, Reasons: []Reason{ReasonAllowed}, LocalJurisdiction: "EU", PeerJurisdiction: "EU"},
		},
		{
			name: "expired token",
			req: Request{PostureToken: tok(func(c *Claims) {
				c.IssuedAt = testNow.Add(-20 * time.Minute)
				c.Expiry = testNow.Add(-time.Second)
			})},
			want: denyJP(ReasonTokenExpired),
		},
		{
			name: "token expiring this instant",
			req:  Request{PostureToken: tok(func(c *Claims) { c.Expiry = testNow })},
			want: denyJP(ReasonTokenExpired),
		},
		{
			name: "token not yet valid",
			req: Request{PostureToken: tok(func(c *Claims) {
				c.IssuedAt = testNow.Add(5 * time.Minute)
				c.Expiry = testNow.Add(20 * time.Minute)
			})},
			want: denyJP(ReasonTokenNotYetValid),
		},
		{
			name: "unknown signer",
			req:  Request{PostureToken: issue(t, rogue, goodClaims(peer))},
			want: denyJP(ReasonTokenUnknownSigner),
		},
		{
			name: "trusted key signing for another issuer",
			req: Request{PostureToken: tok(func(c *Claims) {
				c.Issuer = "https://ec.example"
			})},
			want: denyJP(ReasonTokenUnknownSigner),
		},
		{
			name: "signature broken",
			req:  Request{PostureToken: tamper(tok(nil))},
			want: denyJP(ReasonTokenBadSignature),
		},
		{
			name: "signed by another key under a trusted kid",
			req:  Request{PostureToken: issue(t, impostor, goodClaims(peer))},
			want: denyJP(ReasonTokenBadSignature),
		},
		{
			name: "payload swapped under a valid signature",
			req: Request{PostureToken: func() []byte {
				a := strings.Split(string(tok(nil)), ".")
				b := strings.Split(string(tok(func(c *Claims) { c.DeviceID = "other" })), ".")
				return []byte(a[0] + "." + b[1] + "." + a[2])
			}()},
			want: denyJP(ReasonTokenBadSignature),
		},
		{
			name: "hand-built EdDSA token",
			req: Request{PostureToken: rawToken(t,
				map[string]any{"alg": "EdDSA", "kid": "example-2026", "typ": TokenType}, goodClaims(peer),
				func(in []byte) []byte { return ed25519.Sign(exampleKey(), in) })},
			want: allowedJP,
		},
		{
			name: "alg none",
			req: Request{PostureToken: rawToken(t,
				map[string]any{"alg": "none", "kid": "example-2026", "typ": TokenType}, goodClaims(peer), nil)},
			want: denyJP(ReasonTokenMalformed),
		},
		{
			name: "HS256 keyed with the public key",
			req: Request{PostureToken: rawToken(t,
				map[string]any{"alg": "HS256", "kid": "example-2026", "typ": TokenType}, goodClaims(peer),
				func(in []byte) []byte {
					m := hmac.New(sha256.New, []byte("pbQMWCFR3DHQ2crlEMDVwJ6YwzluOjdBeL0PxYPcIig"))
					m.Write(in)
					return m.Sum(nil)
				})},
			want: denyJP(ReasonTokenMalformed),
		},
		{
			name: "JWT of another type from a trusted issuer",
			req: Request{PostureToken: func() []byte {
				js, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: exampleKey(), KeyID: "example-2026"}},
					(&jose.SignerOptions{}).WithType("JWT"))
				if err != nil {
					t.Fatal(err)
				}
				payload, _ := json.Marshal(goodClaims(peer))
				obj, err := js.Sign(payload)
				if err != nil {
					t.Fatal(err)
				}
				s, _ := obj.CompactSerialize()
				return []byte(s)
			}()},
			want: denyJP(ReasonTokenMalformed),
		},
		{
			name: "garbage",
			req:  Request{PostureToken: []byte("not a token")},
			want: denyJP(ReasonTokenMalformed),
		},
		{
			name: "oversized token",
			req: Request{PostureToken: func() []byte {
				c := goodClaims(peer)
				c.Kernel = strings.Repeat("k", MaxTokenSize)
				return rawToken(t, map[string]any{"alg": "EdDSA", "kid": "example-2026", "typ": TokenType}, c,
					func(in []byte) []byte { return ed25519.Sign(exampleKey(), in) })
			}()},
			want: denyJP(ReasonTokenMalformed),
		},
		{
			name: "no token",
			req:  Request{PostureToken: []byte{}},
			want: denyJP(ReasonTokenMissing),
		},
		{
			name: "token bound to another SVID",
			req:  Request{PostureToken: tok(nil), PeerSPKIHash: spki("a rotated or stolen key")},
			want: denyJP(ReasonTokenWrongSVID),
		},
		{
			name: "token replayed by another identity",
			req: Request{
				PeerID:       id("spiffe://jp.example/mallory"),
				PeerSPKIHash: spki("spiffe://jp.example/mallory"),
				PostureToken: tok(nil),
			},
			want: denyJP(ReasonTokenWrongSubject, ReasonTokenWrongSVID),
		},
		{
			name: "missing claim",
			req:  Request{PostureToken: tok(func(c *Claims) { c.DiskEncrypted = nil })},
			want: denyJP(ReasonClaimMissing),
		},
		{
			name: "missing EDR claim",
			req:  Request{PostureToken: tok(func(c *Claims) { c.EDR = nil })},
			want: denyJP(ReasonClaimMissing),
		},
		{
			name: "OS too old",
			req:  Request{PostureToken: tok(func(c *Claims) { c.OS = &OSInfo{Name: "ubuntu", Version: "20.04"} })},
			want: denyJP(ReasonOSTooOld),
		},
		{
			name: "OS version unreadable",
			req:  Request{PostureToken: tok(func(c *Claims) { c.OS = &OSInfo{Name: "ubuntu", Version: "noble"} })},
			want: denyJP(ReasonOSTooOld),
		},
		{
			name: "OS without a minimum",
			req:  Request{PostureToken: tok(func(c *Claims) { c.OS = &OSInfo{Name: "centos", Version: "7"} })},
			want: denyJP(ReasonOSUnsupported),
		},
		{
			name: "disk not encrypted",
			req:  Request{PostureToken: tok(func(c *Claims) { c.DiskEncrypted = ptr(false) })},
			want: denyJP(ReasonDiskNotEncrypted),
		},
		{
			name: "EDR heartbeat stale",
			req:  Request{PostureToken: tok(func(c *Claims) { c.EDR.LastHeartbeat = testNow.Add(-16 * time.Minute) })},
			want: denyJP(ReasonEDRStale),
		},
		{
			name: "EDR not running",
			req:  Request{PostureToken: tok(func(c *Claims) { c.EDR.Running = false })},
			want: denyJP(ReasonEDRNotRunning),
		},
		{
			name: "EDR of another product",
			req:  Request{PostureToken: tok(func(c *Claims) { c.EDR.Name = "some-av" })},
			want: denyJP(ReasonEDRNotRunning),
		},
		{
			name: "firewall off",
			req:  Request{PostureToken: tok(func(c *Claims) { c.Firewall = ptr(false) })},
			want: denyJP(ReasonFirewallOff),
		},
		{
			name: "screen lock off",
			req:  Request{PostureToken: tok(func(c *Claims) { c.ScreenLock = ptr(false) })},
			want: denyJP(ReasonScreenLockOff),
		},
		{
			name: "patch too old",
			req:  Request{PostureToken: tok(func(c *Claims) { c.LastPatch = testNow.Add(-31 * 24 * time.Hour) })},
			want: denyJP(ReasonPatchTooOld),
		},
		{
			name: "token too old",
			req: Request{PostureToken: tok(func(c *Claims) {
				c.IssuedAt = testNow.Add(-61 * time.Minute)
				c.Expiry = testNow.Add(time.Hour)
			})},
			want: denyJP(ReasonTokenTooOld),
		},
		{
			name: "every failed requirement",
			req: Request{PostureToken: tok(func(c *Claims) {
				c.OS.Version = "18.04"
				c.DiskEncrypted = ptr(false)
				c.LastPatch = testNow.Add(-90 * 24 * time.Hour)
				c.ScreenLock = nil
			})},
			want: denyJP(ReasonOSTooOld, ReasonDiskNotEncrypted, ReasonClaimMissing, ReasonPatchTooOld),
		},
		{
			name: "expired and replayed",
			req: Request{
				PeerID:       id("spiffe://jp.example/mallory"),
				PeerSPKIHash: spki("spiffe://jp.example/mallory"),
				PostureToken: tok(func(c *Claims) { c.IssuedAt = testNow.Add(-time.Hour); c.Expiry = testNow.Add(-time.Minute) }),
			},
			want: denyJP(ReasonTokenExpired, ReasonTokenWrongSubject, ReasonTokenWrongSVID),
		},
		{
			name: "peer jurisdiction unmapped",
			req: Request{
				PeerID:       id("spiffe://nowhere.example/ws"),
				PeerSPKIHash: spki("spiffe://nowhere.example/ws"),
				PostureToken: issue(t, example, goodClaims("spiffe://nowhere.example/ws")),
			},
			want: outcome{Verdict: Deny, Reasons: []Reason{ReasonJurisdictionUnmapped}, LocalJurisdiction: "EU"},
		},
		{
			name: "local jurisdiction unmapped",
			req:  Request{PostureToken: tok(nil), LocalID: id("spiffe://elsewhere.example/sidecar")},
			want: outcome{Verdict: Deny, Reasons: []Reason{ReasonLocalJurisdictionUnmapped}, PeerJurisdiction: "JP"},
		},
		{
			name: "no transfer rule",
			req:  Request{Route: "records"},
			want: denyJP(ReasonNoTransferRule),
		},
		{
			name: "explicit deny rule",
			req: Request{
				PeerID:       id("spiffe://cn.example/ws"),
				PeerSPKIHash: spki("spiffe://cn.example/ws"),
				PostureToken: issue(t, example, goodClaims("spiffe://cn.example/ws")),
			},
			want: outcome{Verdict: Deny, Reasons: []Reason{ReasonTransferDenied}, LocalJurisdiction: "EU", PeerJurisdiction: "CN"},
		},
		{
			name: "path binding beats trust domain binding",
			req: Request{
				PeerID:       id("spiffe://eu.example/cn-lab/ws"),
				PeerSPKIHash: spki("spiffe://eu.example/cn-lab/ws"),
				PostureToken: issue(t, example, goodClaims("spiffe://eu.example/cn-lab/ws")),
			},
			want: outcome{Verdict: Deny, Reasons: []Reason{ReasonTransferDenied}, LocalJurisdiction: "EU", PeerJurisdiction: "CN"},
		},
		{
			name: "expired legal basis falls to the next rule",
			req: Request{
				PeerID:       id("spiffe://uk.example/ws"),
				PeerSPKIHash: spki("spiffe://uk.example/ws"),
				PostureToken: issue(t, example, goodClaims("spiffe://uk.example/ws")),
			},
			want: outcome{Verdict: Deidentify, Reasons: []Reason{ReasonLegalBasisExpired, ReasonDeidentified}, Profile: "pseudonymize", LocalJurisdiction: "EU", PeerJurisdiction: "UK"},
		},
		{
			name: "expired legal basis and no other rule",
			req:  Request{Route: "records", PeerID: id("spiffe://uk.example/ws")},
			want: outcome{Verdict: Deny, Reasons: []Reason{ReasonLegalBasisExpired, ReasonNoTransferRule}, LegalBasis: "scc", LocalJurisdiction: "EU", PeerJurisdiction: "UK"},
		},
		{
			name: "posture and residency fail together",
			req: Request{
				PeerID:       id("spiffe://cn.example/ws"),
				PeerSPKIHash: spki("spiffe://cn.example/ws"),
				PostureToken: issue(t, example, func() Claims {
					c := goodClaims("spiffe://cn.example/ws")
					c.DiskEncrypted = ptr(false)
					return c
				}()),
			},
			want: outcome{Verdict: Deny, Reasons: []Reason{ReasonDiskNotEncrypted, ReasonTransferDenied}, LocalJurisdiction: "EU", PeerJurisdiction: "CN"},
		},
		{
			name: "route without posture ignores the token",
			req:  Request{Route: "records", PeerID: id("spiffe://eu.example/ward-3"), PostureToken: []byte("junk")},
			want: outcome{Verdict: Allow, Reasons: []Reason{ReasonAllowed}, LocalJurisdiction: "EU", PeerJurisdiction: "EU"},
		},
		{
			name: "unknown route",
			req:  Request{Route: "nope", PostureToken: tok(nil)},
			want: outcome{Verdict: Deny, Reasons: []Reason{ReasonUnknownRoute}},
		},
		{
			name: "peer ID not allowed",
			req:  Request{PeerID: id("spiffe://evil.example/ws"), PostureToken: tok(nil)},
			want: outcome{Verdict: Deny, Reasons: []Reason{ReasonIDNotAllowed}},
		},
		{
			name:  "no policy",
			noPol: true,
			req:   Request{PostureToken: tok(nil)},
			want:  outcome{Verdict: Deny, Reasons: []Reason{ReasonNoPolicy}},
		},
		{
			name: "outbound push allowed",
			req:  Request{Direction: Outbound, PeerID: id("spiffe://jp.example/pacs")},
			want: allowedJP,
		},
		{
			name: "outbound push denied by residency",
			req:  Request{Direction: Outbound, PeerID: id("spiffe://cn.example/pacs")},
			want: outcome{Verdict: Deny, Reasons: []Reason{ReasonTransferDenied}, LocalJurisdiction: "EU", PeerJurisdiction: "CN"},
		},
		{
			name: "outbound to a server the route does not name",
			req:  Request{Direction: Outbound, PeerID: id("spiffe://jp.example/other")},
			want: outcome{Verdict: Deny, Reasons: []Reason{ReasonIDNotAllowed}},
		},
		{
			name: "outbound route unknown",
			req:  Request{Direction: Outbound, Route: "records", PeerID: id("spiffe://jp.example/pacs")},
			want: outcome{Verdict: Deny, Reasons: []Reason{ReasonUnknownRoute}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, p)
			if tt.noPol {
				e.SetPolicy(nil)
			}
			req := tt.req
			if req.Route == "" {
				req.Route = "pacs"
			}
			if req.PeerID.IsZero() {
				req.PeerID = id(peer)
			}
			if req.PeerSPKIHash == ([32]byte{}) {
				req.PeerSPKIHash = spki(req.PeerID.String())
			}
			if req.LocalID.IsZero() {
				req.LocalID = id(localID)
			}
			if req.PostureToken == nil && req.Route == "pacs" && req.Direction == Inbound {
				t.Fatal("test case without a token on a posture route")
			}
			got := e.Decide(req)
			if diff := cmp.Diff(tt.want, outcomeOf(got)); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
			if len(got.Reasons) == 0 {
				t.Error("decision without reasons")
			}
			if !tt.noPol && got.PolicyVersion != p.Version {
				t.Errorf("PolicyVersion = %q, want %q", got.PolicyVersion, p.Version)
			}
			if got.Admitted() != (got.Verdict != Deny) {
				t.Error("Admitted disagrees with Verdict")
			}
			if !got.Admitted() && !got.ValidUntil.IsZero() {
				t.Errorf("denial with ValidUntil %v", got.ValidUntil)
			}
		})
	}
}

func exampleKey() ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("medgate example posture issuer"))
	return ed25519.NewKeyFromSeed(seed[:])
}

func TestDecideDetails(t *testing.T) {
	p := testPolicy(t)
	e := newEngine(t, p)
	const peer = "spiffe://jp.example/workstation-1"
	c := goodClaims(peer)
	d := e.Decide(Request{
		Route:        "pacs",
		PeerID:       id(peer),
		PeerSPKIHash: spki(peer),
		PostureToken: issue(t, exampleSigner(t), c),
		LocalID:      id(localID),
		Now:          testNow,
	})
	want := Decision{
		Verdict:           Allow,
		Reasons:           []Reason{ReasonAllowed},
		PolicyVersion:     p.Version,
		ValidUntil:        c.EDR.LastHeartbeat.Add(15 * time.Minute), // the heartbeat goes stale first
		Route:             "pacs",
		DataClass:         "imaging",
		LocalJurisdiction: "EU",
		PeerJurisdiction:  "JP",
		LegalBasis:        LegalBasis{Type: "adequacy", Reference: "(EU) 2019/419", Expires: time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)},
		Posture:           PostureSummary{Issuer: exampleIssuer, DeviceID: "dev-0042", OSName: "ubuntu", OSVersion: "24.04"},
	}
	if diff := cmp.Diff(want, d); diff != "" {
		t.Errorf("decision (-want +got):\n%s", diff)
	}

	// A denied token that verified still names the device for the event.
	c.DiskEncrypted = ptr(false)
	d = e.Decide(Request{Route: "pacs", PeerID: id(peer), PeerSPKIHash: spki(peer), PostureToken: issue(t, exampleSigner(t), c), LocalID: id(localID)})
	if d.Posture.DeviceID != "dev-0042" || d.LegalBasis.Type != "" || d.Profile != "" {
		t.Errorf("denial: posture %+v, legal basis %+v, profile %q", d.Posture, d.LegalBasis, d.Profile)
	}
}

func TestValidUntil(t *testing.T) {
	p := testPolicy(t)
	e := newEngine(t, p)
	const peer = "spiffe://jp.example/workstation-1"
	tests := []struct {
		name string
		mod  func(*Claims)
		want time.Time
	}{
		{"token expiry", func(c *Claims) { c.Expiry = testNow.Add(5 * time.Minute) }, testNow.Add(5 * time.Minute)},
		{"heartbeat", nil, testNow.Add(13 * time.Minute)},
		{"token age", func(c *Claims) { c.IssuedAt = testNow.Add(-58 * time.Minute); c.Expiry = testNow.Add(time.Hour) }, testNow.Add(2 * time.Minute)},
		{"patch age", func(c *Claims) { c.LastPatch = testNow.Add(-30*24*time.Hour + time.Minute) }, testNow.Add(time.Minute)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := goodClaims(peer)
			if tt.mod != nil {
				tt.mod(&c)
			}
			d := e.Decide(Request{Route: "pacs", PeerID: id(peer), PeerSPKIHash: spki(peer), PostureToken: issue(t, exampleSigner(t), c), LocalID: id(localID), Now: testNow})
			if !d.Admitted() || !d.ValidUntil.Equal(tt.want) {
				t.Errorf("got %v until %v, want allow until %v", d.Reasons, d.ValidUntil, tt.want)
			}
		})
	}
	t.Run("legal basis", func(t *testing.T) {
		d := e.Decide(Request{Direction: Outbound, Route: "pacs", PeerID: id("spiffe://jp.example/pacs"), LocalID: id(localID), Now: testNow})
		if want := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC); !d.ValidUntil.Equal(want) {
			t.Errorf("ValidUntil = %v, want %v", d.ValidUntil, want)
		}
		d = e.Decide(Request{Direction: Outbound, Route: "pacs", PeerID: id("spiffe://jp.example/pacs"), LocalID: id(localID), Now: time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)})
		if d.Verdict != Deidentify || !d.Has(ReasonLegalBasisExpired) {
			t.Errorf("after expiry: %v %v, want deidentify with %s", d.Verdict, d.Reasons, ReasonLegalBasisExpired)
		}
	})
}

func TestCache(t *testing.T) {
	p := testPolicy(t)
	const peer = "spiffe://jp.example/workstation-1"
	c := goodClaims(peer)
	c.Expiry = testNow.Add(5 * time.Minute)
	tok := issue(t, exampleSigner(t), c)
	req := func(now time.Time) Request {
		return Request{Route: "pacs", PeerID: id(peer), PeerSPKIHash: spki(peer), PostureToken: tok, LocalID: id(localID), Now: now}
	}

	t.Run("hit within the token's life", func(t *testing.T) {
		e := newEngine(t, p)
		first := e.Decide(req(testNow))
		second := e.Decide(req(testNow.Add(time.Minute)))
		if diff := cmp.Diff(first, second); diff != "" {
			t.Errorf("cached decision differs (-first +second):\n%s", diff)
		}
		if got := e.CacheStats(); got != (CacheStats{Hits: 1, Misses: 1}) {
			t.Errorf("stats = %+v, want one miss then one hit", got)
		}
		second.Reasons[0] = "mutated"
		if third := e.Decide(req(testNow.Add(2 * time.Minute))); third.Reasons[0] != ReasonAllowed {
			t.Error("a caller's change to Reasons reached the cache")
		}
	})
	t.Run("never past the token's expiry", func(t *testing.T) {
		e := newEngine(t, p)
		if d := e.Decide(req(testNow)); !d.Admitted() {
			t.Fatalf("first decision: %v", d.Reasons)
		}
		d := e.Decide(req(c.Expiry))
		if d.Admitted() || !d.Has(ReasonTokenExpired) {
			t.Errorf("at expiry: %v %v, want deny with %s", d.Verdict, d.Reasons, ReasonTokenExpired)
		}
		if got := e.CacheStats().Hits; got != 0 {
			t.Errorf("hits = %d, want 0", got)
		}
	})
	t.Run("never before it was made", func(t *testing.T) {
		e := newEngine(t, p)
		e.Decide(req(testNow))
		if d := e.Decide(req(testNow.Add(-5 * time.Minute))); d.Admitted() {
			t.Errorf("a decision cached at %v served a request at an earlier time", testNow)
		}
	})
	t.Run("never past MaxCacheAge", func(t *testing.T) {
		e, err := NewEngine(Config{MaxCacheAge: time.Second}, Deps{})
		if err != nil {
			t.Fatal(err)
		}
		e.SetPolicy(p)
		e.Decide(req(testNow))
		e.Decide(req(testNow.Add(2 * time.Second)))
		if got := e.CacheStats(); got.Hits != 0 || got.Misses != 2 {
			t.Errorf("stats = %+v, want two misses", got)
		}
	})
	t.Run("another SVID key misses", func(t *testing.T) {
		e := newEngine(t, p)
		e.Decide(req(testNow))
		r := req(testNow)
		r.PeerSPKIHash = spki("stolen")
		if d := e.Decide(r); d.Admitted() || !d.Has(ReasonTokenWrongSVID) {
			t.Errorf("got %v %v, want deny with %s", d.Verdict, d.Reasons, ReasonTokenWrongSVID)
		}
	})
	t.Run("another identity misses", func(t *testing.T) {
		e := newEngine(t, p)
		e.Decide(req(testNow))
		r := req(testNow)
		r.PeerID = id("spiffe://jp.example/mallory")
		if d := e.Decide(r); d.Admitted() || !d.Has(ReasonTokenWrongSubject) {
			t.Errorf("got %v %v, want deny with %s", d.Verdict, d.Reasons, ReasonTokenWrongSubject)
		}
	})
	t.Run("policy version", func(t *testing.T) {
		e := newEngine(t, p)
		if d := e.Decide(req(testNow)); !d.Admitted() {
			t.Fatalf("first decision: %v", d.Reasons)
		}
		stricter, err := Parse("stricter.yaml", []byte(strings.Replace(testPolicyYAML(t),
			"    - dataClass: imaging\n      from: EU\n      to: JP\n      action: allow\n      legalBasis: {type: adequacy, reference: (EU) 2019/419, expires: 2027-03-01}\n",
			"    - {dataClass: imaging, from: EU, to: JP, action: deny}\n", 1)))
		if err != nil {
			t.Fatal(err)
		}
		if stricter.Version == p.Version {
			t.Fatal("a changed policy kept its version")
		}
		e.SetPolicy(stricter)
		d := e.Decide(req(testNow.Add(time.Second)))
		if d.Admitted() || !d.Has(ReasonTransferDenied) || d.PolicyVersion != stricter.Version {
			t.Errorf("after the change: %v %v from %s, want deny with %s from %s", d.Verdict, d.Reasons, d.PolicyVersion, ReasonTransferDenied, stricter.Version)
		}
		e.SetPolicy(p)
		if d := e.Decide(req(testNow.Add(2 * time.Second))); !d.Admitted() || d.PolicyVersion != p.Version {
			t.Errorf("back to the first policy: %v %v", d.Verdict, d.Reasons)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		e, err := NewEngine(Config{CacheSize: -1}, Deps{})
		if err != nil {
			t.Fatal(err)
		}
		e.SetPolicy(p)
		a, b := e.Decide(req(testNow)), e.Decide(req(testNow))
		if !a.Admitted() || !b.Admitted() || e.CacheStats() != (CacheStats{}) {
			t.Errorf("got %v, %v, stats %+v", a.Reasons, b.Reasons, e.CacheStats())
		}
	})
}

func TestDecideConcurrentWithPolicySwap(t *testing.T) {
	p := testPolicy(t)
	q, err := Parse("other.yaml", []byte(testPolicyYAML(t)+"---\napiVersion: medgate.io/v1\nkind: AccessPolicy\nmetadata: {name: extra}\nspec: {dataClass: imaging, allow: [\"spiffe://eu.example/*\"]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, p)
	const peer = "spiffe://jp.example/workstation-1"
	tok := issue(t, exampleSigner(t), goodClaims(peer))
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 200 {
				d := e.Decide(Request{Route: "pacs", PeerID: id(peer), PeerSPKIHash: spki(peer), PostureToken: tok, LocalID: id(localID), Now: testNow})
				if !d.Admitted() || (d.PolicyVersion != p.Version && d.PolicyVersion != q.Version) {
					t.Errorf("got %v from %q", d.Reasons, d.PolicyVersion)
					return
				}
			}
		}()
	}
	for i := range 100 {
		if i%2 == 0 {
			e.SetPolicy(q)
		} else {
			e.SetPolicy(p)
		}
	}
	for range 4 {
		<-done
	}
}
