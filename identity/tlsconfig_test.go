package identity_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/identity/devca"
	"github.com/medgate/medgate/identity/identitytest"
)

func newCA(t *testing.T, td string) *devca.CA {
	t.Helper()
	ca, err := devca.New(spiffeid.RequireTrustDomainFromString(td))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *devca.CA, id string, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	s, err := ca.Issue(spiffeid.RequireFromString(id), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// handshake runs a real TLS handshake over loopback and returns the
// server's error.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		done <- tc.Handshake()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cc := tls.Client(c, client)
	cc.SetDeadline(time.Now().Add(5 * time.Second))
	cc.Handshake()
	cc.Read(make([]byte, 1)) // let the server finish judging the client's certificate
	return <-done
}

func TestHandshakeRefusals(t *testing.T) {
	eu := newCA(t, "eu.example")
	cn := newCA(t, "cn.example")
	serverSVID := issue(t, eu, "spiffe://eu.example/pacs", time.Hour)
	serverSrc := &source{svid: serverSVID, set: setOf(eu)}
	allowed, _ := identity.ParsePatterns("spiffe://eu.example/lab/*")
	server := identity.ServerConfig(serverSrc, identity.AllowPatterns(allowed), nil)

	clientFor := func(svid *x509svid.SVID) *tls.Config {
		return identity.ClientConfig(&source{svid: svid, set: setOf(eu, cn)}, identity.AllowID(serverSVID.ID), nil)
	}
	expiredCA := newCA(t, "eu.example")
	expiredCA.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	expiredCA.Cert, expiredCA.Key = eu.Cert, eu.Key

	tests := []struct {
		name   string
		client *tls.Config
		want   identity.Reason
	}{
		{"allowed", clientFor(issue(t, eu, "spiffe://eu.example/lab/ws1", time.Hour)), ""},
		{"id not allowed", clientFor(issue(t, eu, "spiffe://eu.example/billing", time.Hour)), identity.ReasonIDNotAllowed},
		{"other trust domain", clientFor(issue(t, cn, "spiffe://cn.example/lab/ws1", time.Hour)), identity.ReasonUnknownTrustDomain},
		{"expired", clientFor(issue(t, expiredCA, "spiffe://eu.example/lab/ws1", time.Hour/2)), identity.ReasonExpired},
		{"no client certificate", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{identity.ALPN}, MinVersion: tls.VersionTLS13}, identity.ReasonNoClientCert},
		{"tls 1.2", &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}, identity.ReasonTLSVersion},
		{"wrong alpn", func() *tls.Config {
			c := clientFor(issue(t, eu, "spiffe://eu.example/lab/ws1", time.Hour))
			c.NextProtos = []string{"h2"}
			return c
		}(), identity.ReasonWrongProtocol},
		{"no alpn", func() *tls.Config {
			c := clientFor(issue(t, eu, "spiffe://eu.example/lab/ws1", time.Hour))
			c.NextProtos = nil
			c.VerifyConnection = nil // a generic TLS client, not a medgate sidecar
			return c
		}(), identity.ReasonWrongProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := handshake(t, server, tt.client)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("handshake: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("handshake succeeded, want refusal %s", tt.want)
			}
			if got := identity.Classify(err); got != tt.want {
				t.Errorf("Classify(%v) = %s, want %s", err, got, tt.want)
			}
		})
	}
}

func TestClassifyPlainTCP(t *testing.T) {
	eu := newCA(t, "eu.example")
	server := identity.ServerConfig(&source{svid: issue(t, eu, "spiffe://eu.example/pacs", time.Hour), set: setOf(eu)}, identity.AllowPatterns(nil), nil)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, _ := ln.Accept()
		defer c.Close()
		done <- tls.Server(c, server).Handshake()
	}()
	c, _ := net.Dial("tcp", ln.Addr().String())
	io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
	err := <-done
	c.Close()
	if got := identity.Classify(err); got != identity.ReasonNotTLS {
		t.Errorf("Classify(%v) = %s, want %s", err, got, identity.ReasonNotTLS)
	}
}

func TestClientRefusesWrongServer(t *testing.T) {
	eu := newCA(t, "eu.example")
	server := identity.ServerConfig(&source{svid: issue(t, eu, "spiffe://eu.example/impostor", time.Hour), set: setOf(eu)}, identity.AllowPatterns(mustPatterns(t, "spiffe://eu.example/*")), nil)
	var clientErr error
	client := identity.ClientConfig(&source{svid: issue(t, eu, "spiffe://eu.example/lab", time.Hour), set: setOf(eu)}, func(id spiffeid.ID) error {
		clientErr = identity.AllowID(spiffeid.RequireFromString("spiffe://eu.example/pacs"))(id)
		return clientErr
	}, nil)
	handshake(t, server, client)
	var pe *identity.PeerError
	if !errors.As(clientErr, &pe) || pe.Reason != identity.ReasonWrongPeer {
		t.Fatalf("client verification error = %v, want %s", clientErr, identity.ReasonWrongPeer)
	}
}

func TestFileSourceReload(t *testing.T) {
	eu := newCA(t, "eu.example")
	dir := t.TempDir()
	if err := eu.WriteSVID(issue(t, eu, "spiffe://eu.example/a", time.Hour), dir); err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewFileSource(identity.FileConfig{
		CertFile: filepath.Join(dir, devca.SVIDFile),
		KeyFile:  filepath.Join(dir, devca.KeyFile),
		Bundles:  []string{filepath.Join(dir, devca.BundleFile)},
		Interval: 20 * time.Millisecond,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go src.Run(ctx)

	// A broken file keeps the last good SVID.
	os.WriteFile(filepath.Join(dir, devca.SVIDFile), []byte("garbage"), 0o644)
	time.Sleep(100 * time.Millisecond)
	if s, _ := src.GetX509SVID(); s.ID.String() != "spiffe://eu.example/a" {
		t.Fatalf("after a bad write the source serves %s", s.ID)
	}
	if err := eu.WriteSVID(issue(t, eu, "spiffe://eu.example/b", time.Hour), dir); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, _ := src.GetX509SVID()
		if s.ID.String() == "spiffe://eu.example/b" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("source still serves %s", s.ID)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFileSourceFederatedBundles(t *testing.T) {
	eu, cn := newCA(t, "eu.example"), newCA(t, "cn.example")
	dir := t.TempDir()
	eu.WriteSVID(issue(t, eu, "spiffe://eu.example/a", time.Hour), dir)
	cnPath := filepath.Join(dir, "cn.pem")
	os.WriteFile(cnPath, cn.BundlePEM(), 0o644)
	src, err := identity.NewFileSource(identity.FileConfig{
		CertFile: filepath.Join(dir, devca.SVIDFile),
		KeyFile:  filepath.Join(dir, devca.KeyFile),
		Bundles:  []string{filepath.Join(dir, devca.BundleFile), cnPath},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, td := range []string{"eu.example", "cn.example"} {
		if _, err := src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString(td)); err != nil {
			t.Errorf("bundle for %s: %v", td, err)
		}
	}
	// The same file given twice names its trust domain twice.
	_, err = identity.NewFileSource(identity.FileConfig{
		CertFile: filepath.Join(dir, devca.SVIDFile),
		KeyFile:  filepath.Join(dir, devca.KeyFile),
		Bundles:  []string{cnPath, cnPath},
	}, nil)
	if err == nil {
		t.Error("duplicate trust domain accepted")
	}
}

// TestWorkloadAPIRotation shows the Workload API path end to end in process:
// a live connection survives a rotation, and the next handshake presents the
// new SVID.
func TestWorkloadAPIRotation(t *testing.T) {
	eu := newCA(t, "eu.example")
	api := identitytest.NewWorkloadAPI(t)
	first := issue(t, eu, "spiffe://eu.example/pacs", time.Hour)
	api.SetSVID(first, []*x509.Certificate{eu.Cert})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := identity.WorkloadAPISource(ctx, api.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	server := identity.ServerConfig(src, identity.AllowPatterns(mustPatterns(t, "spiffe://eu.example/*")), nil)
	ln, _ := tls.Listen("tcp", "127.0.0.1:0", server)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go io.Copy(c, c)
		}
	}()
	client := identity.ClientConfig(&source{svid: issue(t, eu, "spiffe://eu.example/lab", time.Hour), set: setOf(eu)}, identity.AllowPatterns(mustPatterns(t, "spiffe://eu.example/*")), nil)
	live, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	echo(t, live, "before")
	serial := func(c *tls.Conn) string { return c.ConnectionState().PeerCertificates[0].SerialNumber.String() }
	before := serial(live)

	second := issue(t, eu, "spiffe://eu.example/pacs", time.Hour)
	api.SetSVID(second, []*x509.Certificate{eu.Cert})
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, _ := src.GetX509SVID()
		if s.Certificates[0].SerialNumber.Cmp(second.Certificates[0].SerialNumber) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("source did not pick up the rotated SVID")
		}
		time.Sleep(10 * time.Millisecond)
	}
	echo(t, live, "after") // the live connection is still up
	next, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if serial(next) == before || serial(next) != second.Certificates[0].SerialNumber.String() {
		t.Errorf("new connection presents serial %s, want the rotated %s", serial(next), second.Certificates[0].SerialNumber)
	}
}

func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo %q: got %q, %v", msg, buf, err)
	}
}

func mustPatterns(t *testing.T, s string) identity.Patterns {
	t.Helper()
	ps, err := identity.ParsePatterns(s)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}
