package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/identity/identitytest"
)

// echoApp echoes every line it reads.
func startEchoApp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

type fixedSource struct {
	svid *x509svid.SVID
	set  *x509bundle.Set
}

func (s fixedSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }
func (s fixedSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.set.GetX509BundleForTrustDomain(td)
}

// live is an app connection through an outbound sidecar to an echo app.
type live struct {
	c net.Conn
	r *bufio.Reader
}

// openLive connects to addr. A sidecar that refuses the session may reset
// the connection before Dial returns; the session then echoes nothing.
func openLive(t *testing.T, addr string) *live {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return &live{}
	}
	t.Cleanup(func() { c.Close() })
	return &live{c, bufio.NewReader(c)}
}

// echo reports whether msg makes the round trip.
func (l *live) echo(msg string) bool {
	if l.c == nil {
		return false
	}
	l.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(l.c, msg); err != nil {
		return false
	}
	got, err := l.r.ReadString('\n')
	return err == nil && strings.TrimSpace(got) == msg
}

// TestE2EWorkloadAPIRotation runs the inbound sidecar on SVIDs from a
// Workload API server; the SVID rotates while a session is live. The
// session keeps flowing and the next handshake presents the new SVID.
func TestE2EWorkloadAPIRotation(t *testing.T) {
	ca := newTestCA(t, "hospital.example")
	api := identitytest.NewWorkloadAPI(t)
	first := ca.svid("spiffe://hospital.example/pacs", time.Hour)
	api.SetSVID(first, []*x509.Certificate{ca.ca.Cert})

	in := startSidecar(t, map[string]string{
		"MEDGATE_WORKLOAD_API_ADDR": api.Addr,
		"MEDGATE_INBOUND_LISTEN":    "127.0.0.1:0",
		"MEDGATE_INBOUND_UPSTREAM":  startEchoApp(t),
		"MEDGATE_INBOUND_ALLOW":     "spiffe://hospital.example/lab/*",
	})
	lab := startOutbound(t, ca.issue("spiffe://hospital.example/lab/ws1", time.Hour), []string{ca.bundle()}, in)

	live, err := net.Dial("tcp", lab.out)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	live.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(live)
	roundTrip := func(msg string) {
		t.Helper()
		fmt.Fprintln(live, msg)
		got, err := r.ReadString('\n')
		if err != nil || strings.TrimSpace(got) != msg {
			t.Fatalf("round trip %q: got %q, %v", msg, got, err)
		}
	}
	roundTrip("before rotation")

	presented := func() string {
		t.Helper()
		client := ca.svid("spiffe://hospital.example/lab/probe", time.Hour)
		src := fixedSource{client, x509bundle.NewSet(x509bundle.FromX509Authorities(ca.ca.TrustDomain, []*x509.Certificate{ca.ca.Cert}))}
		c, err := tls.Dial("tcp", in.in, identity.ClientConfig(src, identity.AllowID(first.ID), nil))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if got := presented(); got != first.Certificates[0].SerialNumber.String() {
		t.Fatalf("sidecar presents serial %s, want the first SVID's", got)
	}

	second := ca.svid("spiffe://hospital.example/pacs", time.Hour)
	api.SetSVID(second, []*x509.Certificate{ca.ca.Cert})
	deadline := time.Now().Add(10 * time.Second)
	for presented() != second.Certificates[0].SerialNumber.String() {
		if time.Now().After(deadline) {
			t.Fatal("sidecar did not pick up the rotated SVID")
		}
		time.Sleep(50 * time.Millisecond)
	}
	roundTrip("after rotation") // the live session survived
}
