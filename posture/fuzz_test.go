package posture

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

func FuzzVerifyToken(f *testing.F) {
	const holder = "spiffe://jp.example/workstation-1"
	ed, ec := exampleSigner(f), ecSigner(f, "ec-1")
	good := issue(f, ed, goodClaims(holder))
	f.Add(good)
	f.Add(issue(f, ec, goodClaims(holder)))
	f.Add(tamper(good))
	minimal := goodClaims(holder)
	minimal.OS, minimal.EDR, minimal.DiskEncrypted, minimal.Firewall, minimal.ScreenLock = nil, nil, nil, nil, nil
	f.Add(issue(f, ed, minimal))
	parts := strings.Split(string(good), ".")
	f.Add([]byte(parts[0] + "." + parts[1] + "."))
	f.Add([]byte("eyJhbGciOiJub25lIn0.e30."))
	f.Add([]byte("{}"))
	f.Add([]byte(""))

	ti, err := NewTrustedIssuers(Issuer{Name: exampleIssuer, JWKS: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{ed.PublicJWK(), ec.PublicJWK()}}})
	if err != nil {
		f.Fatal(err)
	}
	peer, key := id(holder), spki(holder)
	f.Fuzz(func(t *testing.T, token []byte) {
		c, err := Verify(token, ti, peer, key, testNow)
		if err != nil {
			var te *TokenError
			if !errors.As(err, &te) || len(te.Reasons) == 0 {
				t.Fatalf("error %v is not a *TokenError with reasons", err)
			}
			if !strings.HasPrefix(err.Error(), "posture: ") {
				t.Fatalf("error %q lacks the prefix", err)
			}
			if c != nil && (c.Issuer != exampleIssuer) {
				t.Fatalf("claims of an unverified issuer %q returned", c.Issuer)
			}
			return
		}
		if c.Subject != peer || c.SPKIHash != key || !testNow.Before(c.Expiry) || c.DeviceID == "" {
			t.Fatalf("accepted claims that do not fit the peer: %+v", c)
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var back Claims
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("claims do not round-trip: %v", err)
		}
		b2, _ := json.Marshal(back)
		if string(b) != string(b2) {
			t.Fatalf("claims changed in a round trip:\n%s\n%s", b, b2)
		}
	})
}

func FuzzParsePolicy(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("..", "examples", "policies", "*.yaml"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(testPolicyYAML(f)))
	f.Add([]byte(header + "kind: AccessPolicy\nmetadata: {name: a}\nspec: {dataClass: x, allow: \"spiffe://a.example/*\"}\n"))
	f.Add([]byte(header + "kind: AccessPolicy\nmetadata: {name: a}\nspec:\n  dataClass: x\n  allow: \"spiffe://a.example/*\"\n  when: peer.id.endsWith(\"/lab\") && now.getHours(\"Europe/Berlin\") < 18\n  dryRun: true\n"))
	f.Add([]byte(header + "kind: AccessPolicy\nmetadata: {name: a}\nspec:\n  dataClass: x\n  allow: \"spiffe://a.example/*\"\n  when: |\n    [1, 2].exists(i, peer.path.matches(\"^/lab\" + string(i)))\n      || device.\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("---\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data)
		if err != nil {
			if p != nil {
				t.Fatal("policy and error both returned")
			}
			if !strings.HasPrefix(err.Error(), "posture: ") {
				t.Fatalf("error %q lacks the prefix", err)
			}
			return
		}
		if !json.Valid(p.Canonical()) {
			t.Fatal("canonical form is not JSON")
		}
		q, err := Parse("again.yaml", data)
		if err != nil || q.Version != p.Version {
			t.Fatalf("parsing twice: %v, versions %s and %s", err, p.Version, q.Version)
		}
	})
}

func FuzzPeekExpiry(f *testing.F) {
	const holder = "spiffe://jp.example/workstation-1"
	good := issue(f, exampleSigner(f), goodClaims(holder))
	f.Add(good)
	f.Add(tamper(good))
	f.Add([]byte("eyJhbGciOiJub25lIn0.e30."))
	f.Fuzz(func(t *testing.T, token []byte) {
		exp, err := PeekExpiry(token)
		if err == nil && exp.IsZero() {
			t.Fatal("no error and no expiry")
		}
	})
}
