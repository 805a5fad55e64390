package identity

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// FileConfig names the PEM files of a FileSource.
type FileConfig struct {
	// CertFile holds the SVID leaf certificate, then any intermediates.
	CertFile string
	// KeyFile holds the SVID's PKCS#8 private key.
	KeyFile string
	// Bundles are trust bundle files, one per trust domain. An entry may
	// name its trust domain as "td=path"; otherwise the trust domain is
	// read from the CA certificates' spiffe:// URI SAN, and a lone bundle
	// without one belongs to the SVID's own trust domain.
	Bundles []string
	// Interval is how often the files are checked for changes. Zero means
	// 2 seconds.
	Interval time.Duration
}

// FileSource serves an X.509-SVID and bundles read from PEM files and
// reloads them when they change. A reload that fails keeps the last good
// material and is logged. Safe for concurrent use.
type FileSource struct {
	cfg FileConfig
	log *slog.Logger

	mu      sync.RWMutex
	svid    *x509svid.SVID
	bundles *x509bundle.Set
	stamp   string
}

var _ Source = (*FileSource)(nil)

// NewFileSource loads the files once; it fails if any is unreadable or
// invalid. Call Run to follow changes.
func NewFileSource(cfg FileConfig, log *slog.Logger) (*FileSource, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &FileSource{cfg: cfg, log: log}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Run checks the files every Interval until ctx ends and reloads them when
// their size or modification time changes. It always returns nil.
func (s *FileSource) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		stamp := s.fileStamp()
		s.mu.RLock()
		same := stamp == s.stamp
		s.mu.RUnlock()
		if same {
			continue
		}
		if err := s.reload(); err != nil {
			s.log.Error("svid reload failed, keeping the previous one", "err", err)
			continue
		}
		svid, _ := s.GetX509SVID()
		s.log.Info("svid reloaded", "spiffe_id", svid.ID.String(), "not_after", svid.Certificates[0].NotAfter)
	}
}

func (s *FileSource) fileStamp() string {
	var b strings.Builder
	for _, p := range append([]string{s.cfg.CertFile, s.cfg.KeyFile}, s.cfg.Bundles...) {
		_, path := splitBundleSpec(p)
		if fi, err := os.Stat(path); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", path, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return b.String()
}

func (s *FileSource) reload() error {
	stamp := s.fileStamp()
	svid, err := x509svid.Load(s.cfg.CertFile, s.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("identity: load SVID from %s and %s: %w", s.cfg.CertFile, s.cfg.KeyFile, err)
	}
	set := x509bundle.NewSet()
	var errs []error
	for _, spec := range s.cfg.Bundles {
		b, err := loadBundle(spec, svid.ID.TrustDomain(), len(s.cfg.Bundles) == 1)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if set.Has(b.TrustDomain()) {
			errs = append(errs, fmt.Errorf("identity: trust bundle %s: trust domain %q given twice", spec, b.TrustDomain()))
			continue
		}
		set.Add(b)
	}
	if len(s.cfg.Bundles) == 0 {
		errs = append(errs, errors.New("identity: no trust bundle configured"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.mu.Lock()
	s.svid, s.bundles, s.stamp = svid, set, stamp
	s.mu.Unlock()
	return nil
}

// GetX509SVID implements x509svid.Source.
func (s *FileSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svid, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s *FileSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.bundles.GetX509BundleForTrustDomain(td)
}

func splitBundleSpec(spec string) (td, path string) {
	if before, after, ok := strings.Cut(spec, "="); ok && !strings.ContainsAny(before, "/\\") {
		return before, after
	}
	return "", spec
}

func loadBundle(spec string, own spiffeid.TrustDomain, only bool) (*x509bundle.Bundle, error) {
	tdName, path := splitBundleSpec(spec)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: trust bundle: %w", err)
	}
	var certs []*x509.Certificate
	for rest := bytes.TrimSpace(data); len(rest) > 0; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("identity: trust bundle %s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("identity: trust bundle %s: no PEM certificates", path)
	}
	var td spiffeid.TrustDomain
	switch {
	case tdName != "":
		td, err = spiffeid.TrustDomainFromString(tdName)
		if err != nil {
			return nil, fmt.Errorf("identity: trust bundle %s: trust domain %q: %w", spec, tdName, err)
		}
	default:
		td = trustDomainOf(certs)
		if td.IsZero() {
			if !only {
				return nil, fmt.Errorf("identity: trust bundle %s: its CA certificates name no spiffe:// trust domain; write it as TRUST_DOMAIN=%s", path, path)
			}
			td = own
		}
	}
	return x509bundle.FromX509Authorities(td, certs), nil
}

func trustDomainOf(certs []*x509.Certificate) spiffeid.TrustDomain {
	for _, c := range certs {
		for _, u := range c.URIs {
			if u.Scheme != "spiffe" {
				continue
			}
			if td, err := spiffeid.TrustDomainFromURI(u); err == nil {
				return td
			}
		}
	}
	return spiffeid.TrustDomain{}
}

// WorkloadAPISource connects to the SPIFFE Workload API at addr (for
// example unix:///run/spire/agent.sock) and waits for the first SVID until
// ctx ends. The source follows rotations pushed by the agent; the caller
// closes it.
func WorkloadAPISource(ctx context.Context, addr string) (*workloadapi.X509Source, error) {
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
	if err != nil {
		return nil, fmt.Errorf("identity: workload API at %s: %w", addr, err)
	}
	return src, nil
}
