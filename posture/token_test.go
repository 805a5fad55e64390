package posture

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata")

func trustedExample(t testing.TB) *TrustedIssuers {
	t.Helper()
	s := exampleSigner(t)
	ti, err := NewTrustedIssuers(Issuer{Name: exampleIssuer, JWKS: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{s.PublicJWK()}}})
	if err != nil {
		t.Fatal(err)
	}
	return ti
}

// TestIssueGolden pins the token format: EdDSA is deterministic, so the
// same claims under the example key give the same bytes.
func TestIssueGolden(t *testing.T) {
	const holder = "spiffe://jp.example/workstation-1"
	tok := issue(t, exampleSigner(t), goodClaims(holder))
	golden := filepath.Join("testdata", "example-token.jws")
	if *update {
		if err := os.WriteFile(golden, append(tok, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(tok); got != strings.TrimSpace(string(want)) {
		t.Errorf("token changed; run with -update if that is intended\ngot  %s\nwant %s", got, want)
	}

	parts := strings.Split(string(tok), ".")
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var h map[string]any
	if err := json.Unmarshal(hdr, &h); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]any{"alg": "EdDSA", "kid": "example-2026", "typ": TokenType}, h); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	body, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err := json.Unmarshal(body, &claims); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"iss", "sub", "device_id", "os", "kernel", "disk_encrypted", "edr", "firewall", "screen_lock", "last_patch", "iat", "exp", "cnf"} {
		if _, ok := claims[k]; !ok {
			t.Errorf("claim %q missing from %s", k, body)
		}
	}
	sum := spki(holder)
	if got := claims["cnf"].(map[string]any)["x5t#S256"]; got != base64.RawURLEncoding.EncodeToString(sum[:]) {
		t.Errorf("cnf = %v", got)
	}
}

func TestVerifyRoundTrip(t *testing.T) {
	const holder = "spiffe://jp.example/workstation-1"
	for _, s := range []*Signer{exampleSigner(t), ecSigner(t, "ec-1")} {
		t.Run(s.KeyID(), func(t *testing.T) {
			want := goodClaims(holder)
			want.ID = "jti-1"
			ti, err := NewTrustedIssuers(Issuer{Name: exampleIssuer, JWKS: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{s.PublicJWK()}}})
			if err != nil {
				t.Fatal(err)
			}
			got, err := Verify(issue(t, s, want), ti, id(holder), spki(holder), testNow)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&want, got, cmpIDs); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVerifyErrors(t *testing.T) {
	const holder = "spiffe://jp.example/workstation-1"
	ti := trustedExample(t)
	tok := issue(t, exampleSigner(t), goodClaims(holder))
	_, err := Verify(tok, ti, id("spiffe://jp.example/mallory"), spki("mallory"), testNow.Add(time.Hour))
	var te *TokenError
	if !errors.As(err, &te) {
		t.Fatalf("error %v is not a *TokenError", err)
	}
	if diff := cmp.Diff([]Reason{ReasonTokenExpired, ReasonTokenWrongSubject, ReasonTokenWrongSVID}, te.Reasons); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "posture: token refused (token_expired, token_wrong_subject, token_wrong_svid): ") {
		t.Errorf("message %q", msg)
	}
	if strings.Contains(msg, string(tok)) || strings.Contains(msg, strings.Split(string(tok), ".")[2]) || strings.Contains(msg, "dev-0042") {
		t.Errorf("message %q leaks the token or its claims", msg)
	}
	if _, err := Verify(tok, nil, id(holder), spki(holder), testNow); err == nil {
		t.Error("verified without trusted issuers")
	}
}

func TestIssueRefuses(t *testing.T) {
	s := exampleSigner(t)
	const holder = "spiffe://jp.example/workstation-1"
	tests := []struct {
		name string
		mod  func(*Claims)
		want string
	}{
		{"no subject", func(c *Claims) { c.Subject = spiffeid.ID{} }, "posture: issue: missing claims sub"},
		{"no binding", func(c *Claims) { c.SPKIHash = [32]byte{} }, "posture: issue: missing claims cnf.x5t#S256"},
		{"no times", func(c *Claims) { c.IssuedAt, c.Expiry = time.Time{}, time.Time{} }, "posture: issue: missing claims iat, exp"},
		{"exp before iat", func(c *Claims) { c.Expiry = c.IssuedAt }, "posture: issue: exp must be after iat"},
		{"half an OS", func(c *Claims) { c.OS = &OSInfo{Name: "ubuntu"} }, "posture: issue: os needs name and version"},
		{"too large", func(c *Claims) { c.Kernel = strings.Repeat("x", MaxTokenSize) }, "posture: issue: token of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := goodClaims(holder)
			tt.mod(&c)
			_, err := Issue(s, c)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error %v, want prefix %q", err, tt.want)
			}
		})
	}
}

func TestNewSignerRefuses(t *testing.T) {
	if _, err := NewSigner(exampleKey(), ""); err == nil {
		t.Error("accepted an empty key id")
	}
	if _, err := NewSigner(nil, "k"); err == nil {
		t.Error("accepted a nil key")
	}
}

func TestClaimsJSON(t *testing.T) {
	c := goodClaims("spiffe://jp.example/workstation-1")
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var back Claims
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, back, cmpIDs); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if err := json.Unmarshal([]byte(`{"iat": 1e300}`), &back); err == nil {
		t.Error("accepted an iat out of range")
	}
}
