package proxy_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/medgate/medgate/proxy"
)

// natRelay forwards UDP between a client and a server and can move the
// client's traffic to a new source port mid-connection, as a NAT that
// rebinds does.
type natRelay struct {
	front    *net.UDPConn
	server   *net.UDPAddr
	mu       sync.Mutex
	back     *net.UDPConn
	client   *net.UDPAddr
	rebinds  atomic.Int32
	stopping atomic.Bool
}

func newNATRelay(t *testing.T, server string) *natRelay {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	sa, _ := net.ResolveUDPAddr("udp", server)
	r := &natRelay{front: front, server: sa}
	r.rebind(t)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.client = from
			back := r.back
			r.mu.Unlock()
			back.WriteToUDP(buf[:n], r.server)
		}
	}()
	t.Cleanup(func() { r.stopping.Store(true); front.Close(); r.mu.Lock(); r.back.Close(); r.mu.Unlock() })
	return r
}

// rebind moves the client's traffic to a new source port.
func (r *natRelay) rebind(t *testing.T) {
	back, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	old := r.back
	r.back = back
	r.mu.Unlock()
	if old != nil {
		old.Close()
		r.rebinds.Add(1)
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := back.ReadFromUDP(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			client := r.client
			r.mu.Unlock()
			if client != nil {
				r.front.WriteToUDP(buf[:n], client)
			}
		}
	}()
}

// TestQUICSurvivesClientAddressChange moves the outbound sidecar's traffic
// to a new address in the middle of a transfer; the QUIC connection, and
// the proxied connection on it, carry on.
func TestQUICSurvivesClientAddressChange(t *testing.T) {
	eu := newPKI(t, "eu.example")
	server := eu.source("spiffe://eu.example/pacs")
	in := start(t, proxy.Config{Inbound: []proxy.InboundRoute{{Name: "default", Listen: "127.0.0.1:0", Upstream: echoServer(t), Allow: patterns(t, "spiffe://eu.example/*")}}},
		proxy.Deps{Source: server})
	relay := newNATRelay(t, in.QUICAddr("127.0.0.1:0").String())
	m := proxy.NewMetrics(nil)
	out := start(t, proxy.Config{Outbound: []proxy.OutboundRoute{{Name: "default", Listen: "127.0.0.1:0", Peer: relay.front.LocalAddr().String(), PeerID: server.svid.ID, Transport: proxy.TransportQUIC}}},
		proxy.Deps{Source: eu.source("spiffe://eu.example/lab"), Metrics: m})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go in.Run(ctx)
	go out.Run(ctx)

	c, err := net.Dial("tcp", out.OutboundAddr("default").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	payload := make([]byte, 16<<20)
	rand.Read(payload)
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(c)
		got <- b
	}()
	half := len(payload) / 2
	if _, err := c.Write(payload[:half]); err != nil {
		t.Fatal(err)
	}
	relay.rebind(t) // the client's address changes mid-transfer
	if _, err := c.Write(payload[half:]); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	b := <-got
	if sha256.Sum256(b) != sha256.Sum256(payload) {
		t.Fatalf("transfer across the address change: %d of %d bytes intact", len(b), len(payload))
	}
	if relay.rebinds.Load() != 1 {
		t.Fatal("the relay did not rebind")
	}
	if got := value(m.Handshakes.WithLabelValues("dial_quic", "ok")); got != 1 {
		t.Errorf("QUIC connections dialed = %v: the connection did not survive the address change", got)
	}
}
