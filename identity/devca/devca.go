// Package devca is a small certificate authority for development and tests:
// it mints X.509-SVIDs for one trust domain so that medgate runs without
// SPIRE. Its keys sit in plain files; it is not for production.
//
// Certificates follow the X.509-SVID profile that go-spiffe verifies: ECDSA
// P-256 keys, PKCS#8 private keys, exactly one spiffe:// URI SAN, and the CA
// certificate names its trust domain as a URI SAN so bundles are
// self-describing.
package devca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/medgate/medgate/crypto/keys"
)

// File names inside a CA directory and an issued SVID directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca.key"
	SVIDFile   = "svid.pem"
	KeyFile    = "svid.key"
	BundleFile = "bundle.pem"
)

// DefaultTTL is the lifetime of an issued SVID when none is given.
const DefaultTTL = 24 * time.Hour

// CA issues X.509-SVIDs for one trust domain.
type CA struct {
	TrustDomain spiffeid.TrustDomain
	Cert        *x509.Certificate
	Key         crypto.Signer

	// Now and Rand default to time.Now and crypto/rand.
	Now  func() time.Time
	Rand io.Reader
}

// New creates a CA for td valid for ten years.
func New(td spiffeid.TrustDomain) (*CA, error) {
	ca := &CA{TrustDomain: td}
	key, err := ecdsa.GenerateKey(elliptic.P256(), ca.rand())
	if err != nil {
		return nil, err
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber:          ca.serial(),
		Subject:               pkix.Name{Organization: []string{"medgate dev CA"}, CommonName: td.Name()},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(ca.rand(), tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("devca: create CA certificate: %w", err)
	}
	ca.Cert, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca.Key = key
	return ca, nil
}

func (ca *CA) now() time.Time {
	if ca.Now != nil {
		return ca.Now()
	}
	return time.Now()
}

func (ca *CA) rand() io.Reader {
	if ca.Rand != nil {
		return ca.Rand
	}
	return rand.Reader
}

func (ca *CA) serial() *big.Int {
	n, err := rand.Int(ca.rand(), new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}

// Issue mints an X.509-SVID for id, valid from a minute ago for ttl
// (DefaultTTL when zero or negative). id must be in the CA's trust domain.
func (ca *CA) Issue(id spiffeid.ID, ttl time.Duration) (*x509svid.SVID, error) {
	if id.TrustDomain() != ca.TrustDomain {
		return nil, fmt.Errorf("devca: %s is not in trust domain %q", id, ca.TrustDomain)
	}
	if id.Path() == "" {
		return nil, fmt.Errorf("devca: %s has no path; an SVID names a workload", id)
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), ca.rand())
	if err != nil {
		return nil, err
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber: ca.serial(),
		Subject:      pkix.Name{Organization: []string{"medgate dev"}},
		URIs:         []*url.URL{id.URL()},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(ca.rand(), tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("devca: issue %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}, nil
}

// BundlePEM returns the CA certificate as a PEM trust bundle.
func (ca *CA) BundlePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// Init creates a new CA for td and writes it to dir. It refuses to overwrite
// an existing CA.
func Init(dir string, td spiffeid.TrustDomain) (*CA, error) {
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return nil, fmt.Errorf("devca: %s already holds a CA; remove it first or use another directory", dir)
	}
	ca, err := New(td)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("devca: %w", err)
	}
	if err := writeFile(filepath.Join(dir, CAKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, CACertFile), ca.BundlePEM(), 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// Load reads a CA written by Init.
func Load(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("devca: %w (run 'medgate dev-ca init' first)", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("devca: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("devca: %s: not PEM", dir)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devca: %s: %w", CACertFile, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devca: %s: %w", CAKeyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("devca: CA key cannot sign")
	}
	var td spiffeid.TrustDomain
	for _, u := range cert.URIs {
		if td, err = spiffeid.TrustDomainFromURI(u); err == nil {
			break
		}
	}
	if td.IsZero() {
		return nil, fmt.Errorf("devca: %s names no trust domain", CACertFile)
	}
	return &CA{TrustDomain: td, Cert: cert, Key: signer}, nil
}

// WriteSVID writes svid and the CA's bundle into dir as svid.pem, svid.key
// (mode 0600) and bundle.pem.
func (ca *CA) WriteSVID(svid *x509svid.SVID, dir string) error {
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		return fmt.Errorf("devca: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("devca: %w", err)
	}
	if err := writeFile(filepath.Join(dir, KeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, SVIDFile), certPEM, 0o644); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, BundleFile), ca.BundlePEM(), 0o644)
}

// writeFile replaces path atomically so a reloading reader never sees half
// a file.
func writeFile(path string, data []byte, mode fs.FileMode) error {
	if err := keys.WriteFileAtomic(path, data, mode); err != nil {
		return fmt.Errorf("devca: write %s: %w", path, err)
	}
	return nil
}
