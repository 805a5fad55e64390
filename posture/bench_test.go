package posture

import (
	"testing"
)

func benchRequest(b *testing.B, s *Signer, issuer string) (*Engine, Request) {
	b.Helper()
	const peer = "spiffe://jp.example/workstation-1"
	c := goodClaims(peer)
	c.Issuer = issuer
	e := newEngine(b, testPolicy(b))
	return e, Request{
		Route:        "pacs",
		PeerID:       id(peer),
		PeerSPKIHash: spki(peer),
		PostureToken: issue(b, s, c),
		LocalID:      id(localID),
		Now:          testNow,
	}
}

// BenchmarkDecideCached is a peer reconnecting with the token it used
// before: the decision comes from the cache.
func BenchmarkDecideCached(b *testing.B) {
	e, req := benchRequest(b, exampleSigner(b), exampleIssuer)
	if d := e.Decide(req); !d.Admitted() {
		b.Fatalf("not admitted: %v", d.Reasons)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := e.Decide(req); !d.Admitted() {
			b.Fatal("denied")
		}
	}
	if s := e.CacheStats(); s.Misses != 1 {
		b.Fatalf("cache stats %+v, want every decision but the first from the cache", s)
	}
}

// BenchmarkDecideUncached makes the whole decision each time: token
// signature verification, claims, profile, jurisdictions and residency.
func BenchmarkDecideUncached(b *testing.B) {
	for _, tc := range []struct {
		name   string
		signer *Signer
		issuer string
	}{
		{"EdDSA", exampleSigner(b), exampleIssuer},
		{"ES256", ecSigner(b, "ec-1"), "https://ec.example"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			_, req := benchRequest(b, tc.signer, tc.issuer)
			e, err := NewEngine(Config{CacheSize: -1}, Deps{})
			if err != nil {
				b.Fatal(err)
			}
			e.SetPolicy(testPolicy(b))
			b.ReportAllocs()
			for b.Loop() {
				if d := e.Decide(req); !d.Admitted() {
					b.Fatalf("denied: %v", d.Reasons)
				}
			}
		})
	}
}

// BenchmarkDecideCachedParallel is the cached path under contention for
// the cache's lock.
func BenchmarkDecideCachedParallel(b *testing.B) {
	e, req := benchRequest(b, exampleSigner(b), exampleIssuer)
	e.Decide(req)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e.Decide(req)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	const peer = "spiffe://jp.example/workstation-1"
	tok := issue(b, exampleSigner(b), goodClaims(peer))
	ti := trustedExample(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(tok, ti, id(peer), spki(peer), testNow); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParsePolicy(b *testing.B) {
	data := []byte(testPolicyYAML(b))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("bench.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}
