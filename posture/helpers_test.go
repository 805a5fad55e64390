package posture

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// testNow is the time of every decision in these tests.
var testNow = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

const exampleIssuer = "https://posture.example.org"

// exampleSigner holds the development key whose public half the example
// policies under examples/policies trust.
func exampleSigner(t testing.TB) *Signer {
	t.Helper()
	seed := sha256.Sum256([]byte("medgate example posture issuer"))
	s, err := NewSigner(ed25519.NewKeyFromSeed(seed[:]), "example-2026")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// edSigner returns a deterministic Ed25519 signer named by label.
func edSigner(t testing.TB, label, kid string) *Signer {
	t.Helper()
	seed := sha256.Sum256([]byte(label))
	s, err := NewSigner(ed25519.NewKeyFromSeed(seed[:]), kid)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var (
	ecOnce sync.Once
	ecKey  *ecdsa.PrivateKey
)

// ecSigner returns an ES256 signer; the key is made once per test binary.
func ecSigner(t testing.TB, kid string) *Signer {
	t.Helper()
	ecOnce.Do(func() {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		ecKey = k
	})
	s, err := NewSigner(ecKey, kid)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jwksJSON(t testing.TB, signers ...*Signer) string {
	t.Helper()
	var keys []any
	for _, s := range signers {
		keys = append(keys, s.PublicJWK())
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func id(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }

// spki stands in for the hash of a named workload's SVID key.
func spki(name string) [32]byte { return sha256.Sum256([]byte("svid key of " + name)) }

func ptr[T any](v T) *T { return &v }

// goodClaims passes every requirement of the test profiles at testNow.
func goodClaims(holder string) Claims {
	return Claims{
		Issuer:        exampleIssuer,
		Subject:       id(holder),
		DeviceID:      "dev-0042",
		OS:            &OSInfo{Name: "ubuntu", Version: "24.04"},
		Kernel:        "6.8.0-45-generic",
		DiskEncrypted: ptr(true),
		EDR:           &EDRStatus{Running: true, Name: "falcon-sensor", LastHeartbeat: testNow.Add(-2 * time.Minute)},
		Firewall:      ptr(true),
		ScreenLock:    ptr(true),
		LastPatch:     testNow.Add(-5 * 24 * time.Hour),
		IssuedAt:      testNow.Add(-time.Minute),
		Expiry:        testNow.Add(14 * time.Minute),
		SPKIHash:      spki(holder),
	}
}

func issue(t testing.TB, s *Signer, c Claims) []byte {
	t.Helper()
	tok, err := Issue(s, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// testPolicy is the policy of the decision tests: a sidecar in the EU
// (spiffe://eu.example/sidecar) with an imaging route that requires
// posture and a records route that does not.
func testPolicyYAML(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf(`apiVersion: medgate.io/v1
kind: Jurisdictions
metadata: {name: sites}
spec:
  codes: [EU, JP, UK, CN, US]
  bindings:
    - {id: "spiffe://eu.example/*", jurisdiction: EU}
    - {id: "spiffe://jp.example/*", jurisdiction: JP}
    - {id: "spiffe://uk.example/*", jurisdiction: UK}
    - {id: "spiffe://cn.example/*", jurisdiction: CN}
    - {id: "spiffe://us.example/*", jurisdiction: US}
    - {id: "spiffe://eu.example/cn-lab/*", jurisdiction: CN}
---
apiVersion: medgate.io/v1
kind: MaskingProfile
metadata: {name: pseudonymize}
spec: {reference: PS3.15 Annex E}
---
apiVersion: medgate.io/v1
kind: ResidencyRules
metadata: {name: transfers}
spec:
  rules:
    - {dataClass: imaging, from: EU, to: EU, action: allow}
    - dataClass: imaging
      from: EU
      to: JP
      action: allow
      legalBasis: {type: adequacy, reference: (EU) 2019/419, expires: 2027-03-01}
    - dataClass: imaging
      from: EU
      to: UK
      action: allow
      legalBasis: {type: adequacy, reference: (EU) 2021/1772, expires: 2026-06-28}
    - {dataClass: imaging, from: EU, to: CN, action: deny}
    - {dataClass: imaging, from: EU, to: "*", action: deidentify, maskingProfile: pseudonymize}
    - {dataClass: records, from: EU, to: EU, action: allow}
    - dataClass: records
      from: EU
      to: UK
      action: allow
      legalBasis: {type: scc, reference: SCC-2021-914, expires: 2026-01-01}
---
apiVersion: medgate.io/v1
kind: PostureProfile
metadata: {name: strict}
spec:
  issuers:
    - name: %s
      jwks: '%s'
    - name: https://ec.example
      jwks: '%s'
  minOSVersion: {ubuntu: "22.04", windows: "10.0.19045"}
  requireDiskEncryption: true
  requireFirewall: true
  requireScreenLock: true
  edr: {names: [falcon-sensor], maxHeartbeatAge: 15m}
  maxPatchAge: 30d
  maxTokenAge: 1h
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: pacs}
spec:
  dataClass: imaging
  allow: ["spiffe://eu.example/*", "spiffe://jp.example/*", "spiffe://uk.example/*", "spiffe://cn.example/*", "spiffe://us.example/*", "spiffe://nowhere.example/*"]
  postureProfile: strict
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: records}
spec:
  dataClass: records
  allow: ["spiffe://eu.example/*", "spiffe://jp.example/*", "spiffe://uk.example/*"]
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: push-jp}
spec:
  route: pacs
  direction: outbound
  dataClass: imaging
  allow: ["spiffe://jp.example/pacs", "spiffe://cn.example/pacs"]
`, exampleIssuer, jwksJSON(t, exampleSigner(t)), jwksJSON(t, ecSigner(t, "ec-1")))
}

func testPolicy(t testing.TB) *Policy {
	t.Helper()
	p, err := Parse("test.yaml", []byte(testPolicyYAML(t)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newEngine(t testing.TB, p *Policy) *Engine {
	t.Helper()
	e, err := NewEngine(Config{}, Deps{Clock: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	e.SetPolicy(p)
	return e
}

// tamper flips one bit in the token's signature part.
func tamper(tok []byte) []byte {
	out := append([]byte(nil), tok...)
	i := strings.LastIndexByte(string(out), '.') + 5
	if out[i] == 'A' {
		out[i] = 'B'
	} else {
		out[i] = 'A'
	}
	return out
}

// cmpIDs lets go-cmp compare SPIFFE IDs, whose fields are unexported.
var cmpIDs = cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })
