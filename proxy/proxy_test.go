package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/medgate/medgate/crypto/keys"
	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/identity/devca"
	"github.com/medgate/medgate/proxy"
)

type source struct {
	svid *x509svid.SVID
	set  *x509bundle.Set
}

func (s *source) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }
func (s *source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.set.GetX509BundleForTrustDomain(td)
}

type pki struct {
	t  *testing.T
	ca *devca.CA
}

func newPKI(t *testing.T, td string) *pki {
	ca, err := devca.New(spiffeid.RequireTrustDomainFromString(td))
	if err != nil {
		t.Fatal(err)
	}
	return &pki{t, ca}
}

func (p *pki) source(id string, trust ...*pki) *source {
	return p.sourceTTL(id, time.Hour, trust...)
}

func (p *pki) sourceTTL(id string, ttl time.Duration, trust ...*pki) *source {
	svid, err := p.ca.Issue(spiffeid.RequireFromString(id), ttl)
	if err != nil {
		p.t.Fatal(err)
	}
	set := x509bundle.NewSet(x509bundle.FromX509Authorities(p.ca.TrustDomain, []*x509.Certificate{p.ca.Cert}))
	for _, o := range trust {
		set.Add(x509bundle.FromX509Authorities(o.ca.TrustDomain, []*x509.Certificate{o.ca.Cert}))
	}
	return &source{svid, set}
}

// echoServer is the "legacy app": it echoes what it reads, then closes its
// write side when the client half-closes.
func echoServer(t *testing.T) string {
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
			go func() {
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

type pair struct {
	in, out *proxy.Server
	events  *eventLog
	cancel  context.CancelFunc
	done    sync.WaitGroup
}

type eventLog struct {
	mu sync.Mutex
	ev []proxy.Event
}

func (l *eventLog) sink(e proxy.Event) { l.mu.Lock(); l.ev = append(l.ev, e); l.mu.Unlock() }
func (l *eventLog) find(kind, direction string) []proxy.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []proxy.Event
	for _, e := range l.ev {
		if e.Kind == kind && e.Direction == direction {
			out = append(out, e)
		}
	}
	return out
}

// sharedKeyring is the data owner's keyring that both test sidecars use,
// as sidecars of one organisation share a KMS.
var sharedKeyring = map[*testing.T]*keys.File{}

func keyring(t *testing.T) *keys.File {
	t.Helper()
	if k, ok := sharedKeyring[t]; ok {
		return k
	}
	dir := filepath.Join(t.TempDir(), "keys")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	k, err := keys.InitFile(filepath.Join(dir, "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	sharedKeyring[t] = k
	t.Cleanup(func() { delete(sharedKeyring, t) })
	return k
}

func start(t *testing.T, cfg proxy.Config, deps proxy.Deps) *proxy.Server {
	t.Helper()
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Keyring == nil {
		deps.Keyring = keyring(t)
	}
	s, err := proxy.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	return s
}

func newPair(t *testing.T, allow string, client *source, server *source, inCfg proxy.Config) *pair {
	t.Helper()
	upstream := echoServer(t)
	ps, err := identity.ParsePatterns(allow)
	if err != nil {
		t.Fatal(err)
	}
	p := &pair{events: &eventLog{}}
	inCfg.Inbound = []proxy.InboundRoute{{Name: "default", Listen: "127.0.0.1:0", Upstream: upstream, Allow: ps}}
	p.in = start(t, inCfg, proxy.Deps{Source: server, Events: p.events.sink})
	p.out = start(t, proxy.Config{Outbound: []proxy.OutboundRoute{{
		Name: "default", Listen: "127.0.0.1:0", Peer: p.in.InboundAddr("127.0.0.1:0").String(), PeerID: server.svid.ID,
	}}}, proxy.Deps{Source: client, Events: p.events.sink})
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	for _, s := range []*proxy.Server{p.in, p.out} {
		p.done.Add(1)
		go func() { defer p.done.Done(); s.Run(ctx) }()
	}
	t.Cleanup(func() { cancel(); p.done.Wait() })
	return p
}

func (p *pair) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.out.OutboundAddr("default").String())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRoundTripWithHalfClose(t *testing.T) {
	eu := newPKI(t, "eu.example")
	p := newPair(t, "spiffe://eu.example/lab/*", eu.source("spiffe://eu.example/lab/ws1"), eu.source("spiffe://eu.example/pacs"), proxy.Config{})
	c := p.dial(t)
	defer c.Close()
	payload := make([]byte, 5<<20)
	rand.Read(payload)
	go func() {
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite()
	}()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("echo through the tunnel differs: got %d bytes, sent %d", len(got), len(payload))
	}
	waitFor(t, func() bool { return len(p.events.find("session_end", "inbound")) == 1 })
	end := p.events.find("session_end", "inbound")[0]
	if end.Outcome != "ok" || end.BytesFromPeer != int64(len(payload)) || end.BytesToPeer != int64(len(payload)) {
		t.Errorf("session end event = %+v", end)
	}
}

func TestDeniedIDGetsNoBytes(t *testing.T) {
	eu := newPKI(t, "eu.example")
	p := newPair(t, "spiffe://eu.example/lab/*", eu.source("spiffe://eu.example/billing"), eu.source("spiffe://eu.example/pacs"), proxy.Config{})
	// The sidecar refuses so fast that its reset may beat Dial: that is a
	// refusal too.
	if c, err := net.Dial("tcp", p.out.OutboundAddr("default").String()); err == nil {
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("hello"))
		n, _ := io.ReadAll(c)
		if len(n) != 0 {
			t.Fatalf("denied client read %q", n)
		}
	}
	waitFor(t, func() bool { return len(p.events.find("admission", "inbound")) == 1 })
	ev := p.events.find("admission", "inbound")[0]
	if ev.Verdict != "deny" || ev.Reasons[0] != "id_not_allowed" || ev.PeerID != "spiffe://eu.example/billing" {
		t.Errorf("admission event = %+v", ev)
	}
	waitFor(t, func() bool { return len(p.events.find("admission", "outbound")) == 1 })
	if ev := p.events.find("admission", "outbound")[0]; ev.Reasons[0] != "id_not_allowed" {
		t.Errorf("outbound side learned %v, want id_not_allowed", ev.Reasons)
	}
}

// TestFloodDoesNotStarve fills the pending-handshake slots with silent
// connections; a real client still gets through because the oldest pending
// connection is evicted.
func TestFloodDoesNotStarve(t *testing.T) {
	eu := newPKI(t, "eu.example")
	p := newPair(t, "spiffe://eu.example/*", eu.source("spiffe://eu.example/lab"), eu.source("spiffe://eu.example/pacs"),
		proxy.Config{MaxPendingHandshakes: 16, HandshakeTimeout: time.Minute, EvictAfter: 50 * time.Millisecond})
	addr := p.in.InboundAddr("127.0.0.1:0").String()
	var idle []net.Conn
	for range 200 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
		if len(idle)%2 == 0 {
			c.Write([]byte{0x16, 0x03, 0x01}) // a half-sent ClientHello
		}
	}
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	time.Sleep(100 * time.Millisecond) // the flood is now older than EvictAfter
	c := p.dial(t)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || !bytes.Equal(buf, []byte("ping")) {
		t.Fatalf("allowed client starved by a flood: %q, %v", buf, err)
	}
}

func TestDrainLetsTransferFinish(t *testing.T) {
	eu := newPKI(t, "eu.example")
	p := newPair(t, "spiffe://eu.example/*", eu.source("spiffe://eu.example/lab"), eu.source("spiffe://eu.example/pacs"), proxy.Config{})
	c := p.dial(t)
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.Write([]byte("first"))
	buf := make([]byte, 5)
	io.ReadFull(c, buf)
	p.cancel() // both sidecars begin to drain with a session live
	time.Sleep(100 * time.Millisecond)
	if _, err := net.DialTimeout("tcp", p.out.OutboundAddr("default").String(), time.Second); err == nil {
		// Listener address may be reused by the OS only after close; a
		// successful dial means the listener still accepts.
		t.Error("draining sidecar still accepts connections")
	}
	c.Write([]byte("second"))
	c.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "second" {
		t.Fatalf("in-flight session during drain: %q, %v", rest, err)
	}
}

func TestIdleTimeout(t *testing.T) {
	eu := newPKI(t, "eu.example")
	p := newPair(t, "spiffe://eu.example/*", eu.source("spiffe://eu.example/lab"), eu.source("spiffe://eu.example/pacs"), proxy.Config{IdleTimeout: 200 * time.Millisecond})
	c := p.dial(t)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("x"))
	io.ReadFull(c, make([]byte, 1))
	start := time.Now()
	if _, err := io.ReadAll(c); err == nil && time.Since(start) > 5*time.Second {
		t.Fatal("idle session was not closed")
	}
	waitFor(t, func() bool {
		ev := p.events.find("session_end", "inbound")
		return len(ev) == 1 && ev[0].Outcome == "idle_timeout"
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newKeyring(t *testing.T) *keys.File {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "other-keys")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	k, err := keys.InitFile(filepath.Join(dir, "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestInnerLayerAdmission(t *testing.T) {
	eu := newPKI(t, "eu.example")
	tests := []struct {
		name     string
		inKeys   func(*testing.T) keys.Keyring
		inPlain  bool // inbound route disables the inner layer
		outPlain bool // outbound route disables it
		wantDeny string
	}{
		{"shared keyring", keyringFor, false, false, ""},
		{"inbound without the sender's key", newKeyringFor, false, false, "key_unavailable"},
		{"sender without the inner layer", keyringFor, false, true, "inner_layer_required"},
		{"both ends in one site", keyringFor, true, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events := &eventLog{}
			server := eu.source("spiffe://eu.example/pacs")
			in := start(t, proxy.Config{Inbound: []proxy.InboundRoute{{Name: "default", Listen: "127.0.0.1:0", Upstream: echoServer(t),
				Allow: patterns(t, "spiffe://eu.example/*"), DisableInnerLayer: tt.inPlain}}}, proxy.Deps{Source: server, Keyring: tt.inKeys(t), Events: events.sink})
			out := start(t, proxy.Config{Outbound: []proxy.OutboundRoute{{Name: "default", Listen: "127.0.0.1:0", Peer: in.InboundAddr("127.0.0.1:0").String(),
				PeerID: server.svid.ID, DisableInnerLayer: tt.outPlain}}}, proxy.Deps{Source: eu.source("spiffe://eu.example/lab")})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go in.Run(ctx)
			go out.Run(ctx)
			s := openSession(t, out.OutboundAddr("default").String())
			ok := s.echo("hello")
			if tt.wantDeny == "" {
				if !ok {
					t.Fatal("session did not carry data")
				}
				return
			}
			if ok {
				t.Fatalf("session carried data, want deny %s", tt.wantDeny)
			}
			waitFor(t, func() bool {
				ev := events.find("admission", "inbound")
				return len(ev) == 1 && ev[0].Verdict == "deny" && ev[0].Reasons[0] == tt.wantDeny
			})
		})
	}
}

func keyringFor(t *testing.T) keys.Keyring    { return keyring(t) }
func newKeyringFor(t *testing.T) keys.Keyring { return newKeyring(t) }
