package identity

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ALPN is the application protocol both ends of a tunnel must negotiate.
// It doubles as the version of the tunnel protocol.
const ALPN = "medgate/1"

// Source provides the local X.509-SVID and the bundles peers are verified
// against. *workloadapi.X509Source and *FileSource implement it.
type Source interface {
	x509svid.Source
	x509bundle.Source
}

// Authorizer decides whether a peer whose SVID verified may connect; a nil
// error admits. Return a *PeerError to give the refusal a Reason.
type Authorizer func(id spiffeid.ID) error

// AllowPatterns admits IDs matching any of ps. An empty list admits nobody.
func AllowPatterns(ps Patterns) Authorizer {
	return func(id spiffeid.ID) error {
		if ps.Match(id) {
			return nil
		}
		return &PeerError{Reason: ReasonIDNotAllowed, ID: id}
	}
}

// AllowID admits exactly id; any other peer is refused as the wrong peer.
func AllowID(want spiffeid.ID) Authorizer {
	return func(id spiffeid.ID) error {
		if id == want {
			return nil
		}
		return &PeerError{Reason: ReasonWrongPeer, ID: id, Err: fmt.Errorf("want %s", want)}
	}
}

// ServerConfig returns the TLS configuration of the accepting end: TLS 1.3
// only, ALPN medgate/1, a client X.509-SVID required, verified against src's
// bundles at now() and admitted by authorize. The SVID presented is fetched
// from src at each handshake. Key exchange uses Go's defaults, which put the
// hybrid post-quantum X25519MLKEM768 first. Session tickets are off: every
// connection is a full handshake that verifies the peer afresh.
func ServerConfig(src Source, authorize Authorizer, now func() time.Time) *tls.Config {
	return serverConfig(src, authorize, now, ALPN)
}

// GRPCServerConfig is ServerConfig for a gRPC server (the control plane):
// the same checks, with ALPN h2.
func GRPCServerConfig(src Source, authorize Authorizer) *tls.Config {
	return serverConfig(src, authorize, nil, "h2")
}

// GRPCClientConfig is ClientConfig for a gRPC client: the same checks,
// with ALPN h2.
func GRPCClientConfig(src Source, authorize Authorizer) *tls.Config {
	return clientConfig(src, authorize, nil, "h2")
}

func serverConfig(src Source, authorize Authorizer, now func() time.Time, alpn string) *tls.Config {
	if now == nil {
		now = time.Now
	}
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		NextProtos:             []string{alpn},
		ClientAuth:             tls.RequireAnyClientCert,
		SessionTicketsDisabled: true,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return certificate(src)
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verify(cs, src, authorize, now(), alpn)
		},
	}
}

// ClientConfig returns the TLS configuration of the connecting end: TLS 1.3
// only, ALPN medgate/1, presenting src's SVID, and accepting only a server
// whose SVID verifies against src's bundles and passes authorize (usually
// AllowID of the route's remote sidecar). Host names are not checked; the
// SPIFFE ID is.
func ClientConfig(src Source, authorize Authorizer, now func() time.Time) *tls.Config {
	return clientConfig(src, authorize, now, ALPN)
}

func clientConfig(src Source, authorize Authorizer, now func() time.Time, alpn string) *tls.Config {
	if now == nil {
		now = time.Now
	}
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		NextProtos:             []string{alpn},
		InsecureSkipVerify:     true, // replaced by VerifyConnection below
		SessionTicketsDisabled: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return certificate(src)
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verify(cs, src, authorize, now(), alpn)
		},
	}
}

func certificate(src Source) (*tls.Certificate, error) {
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, &PeerError{Reason: ReasonNoSVID, Err: err}
	}
	c := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, cert := range svid.Certificates {
		c.Certificate = append(c.Certificate, cert.Raw)
	}
	return c, nil
}

func verify(cs tls.ConnectionState, bundles x509bundle.Source, authorize Authorizer, now time.Time, alpn string) error {
	if cs.NegotiatedProtocol != alpn {
		return &PeerError{Reason: ReasonWrongProtocol, Err: fmt.Errorf("ALPN %q, want %q", cs.NegotiatedProtocol, alpn)}
	}
	id, err := VerifyPeer(cs.PeerCertificates, bundles, now)
	if err != nil {
		return err
	}
	if authorize == nil {
		return &PeerError{Reason: ReasonIDNotAllowed, ID: id, Err: errors.New("no authorizer configured")}
	}
	return authorize(id)
}

// VerifyPeer verifies a peer's certificate chain as an X.509-SVID against
// bundles at now and returns its SPIFFE ID. Failures are *PeerError.
func VerifyPeer(certs []*x509.Certificate, bundles x509bundle.Source, now time.Time) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, &PeerError{Reason: ReasonNoClientCert}
	}
	leaf := certs[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return spiffeid.ID{}, &PeerError{Reason: ReasonBadSVID, Err: err}
	}
	if now.After(leaf.NotAfter) {
		return id, &PeerError{Reason: ReasonExpired, ID: id, Err: fmt.Errorf("expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))}
	}
	if now.Before(leaf.NotBefore) {
		return id, &PeerError{Reason: ReasonNotYetValid, ID: id, Err: fmt.Errorf("valid from %s", leaf.NotBefore.UTC().Format(time.RFC3339))}
	}
	if _, err := bundles.GetX509BundleForTrustDomain(id.TrustDomain()); err != nil {
		return id, &PeerError{Reason: ReasonUnknownTrustDomain, ID: id, Err: fmt.Errorf("no bundle for trust domain %q", id.TrustDomain())}
	}
	if _, _, err := x509svid.Verify(certs, bundles, x509svid.WithTime(now)); err != nil {
		var cie x509.CertificateInvalidError
		if errors.As(err, &cie) && cie.Reason == x509.Expired {
			return id, &PeerError{Reason: ReasonExpired, ID: id, Err: err}
		}
		return id, &PeerError{Reason: ReasonUntrusted, ID: id, Err: err}
	}
	return id, nil
}

// PeerID returns the SPIFFE ID of a verified peer from a finished
// handshake's state.
func PeerID(cs tls.ConnectionState) (spiffeid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("identity: no peer certificate")
	}
	return x509svid.IDFromCert(cs.PeerCertificates[0])
}

// SPKIHash returns the SHA-256 of cert's SubjectPublicKeyInfo, the value
// posture tokens are bound to.
func SPKIHash(cert *x509.Certificate) [32]byte {
	return sha256.Sum256(cert.RawSubjectPublicKeyInfo)
}
