package identity_test

import (
	"crypto/x509"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/medgate/medgate/identity/devca"
)

// source is a fixed SVID and bundle set.
type source struct {
	svid *x509svid.SVID
	set  *x509bundle.Set
}

func (s *source) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

func (s *source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.set.GetX509BundleForTrustDomain(td)
}

func setOf(cas ...*devca.CA) *x509bundle.Set {
	set := x509bundle.NewSet()
	for _, ca := range cas {
		set.Add(x509bundle.FromX509Authorities(ca.TrustDomain, []*x509.Certificate{ca.Cert}))
	}
	return set
}
