package proxy_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/medgate/medgate/proxy"
)

type quicRig struct {
	in, out   *proxy.Server
	inM, outM *proxy.Metrics
	events    *eventLog
	inAddr    string
}

func newQUICRig(t *testing.T, transport string, inCfg proxy.Config) *quicRig {
	t.Helper()
	eu := newPKI(t, "eu.example")
	server := eu.source("spiffe://eu.example/pacs")
	r := &quicRig{events: &eventLog{}, inM: proxy.NewMetrics(nil), outM: proxy.NewMetrics(nil)}
	inCfg.Inbound = []proxy.InboundRoute{{Name: "default", Listen: "127.0.0.1:0", Upstream: echoServer(t), Allow: patterns(t, "spiffe://eu.example/lab/*")}}
	r.in = start(t, inCfg, proxy.Deps{Source: server, Events: r.events.sink, Metrics: r.inM})
	r.inAddr = r.in.InboundAddr("127.0.0.1:0").String()
	r.out = start(t, proxy.Config{Outbound: []proxy.OutboundRoute{{Name: "default", Listen: "127.0.0.1:0", Peer: r.inAddr, PeerID: server.svid.ID, Transport: transport}}},
		proxy.Deps{Source: eu.source("spiffe://eu.example/lab/ws1"), Events: r.events.sink, Metrics: r.outM})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, s := range []*proxy.Server{r.in, r.out} {
		wg.Add(1)
		go func() { defer wg.Done(); s.Run(ctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return r
}

func roundTrip(t *testing.T, addr string, size int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	payload := make([]byte, size)
	rand.Read(payload)
	go func() {
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("echo differs: %d bytes back, %d sent", len(got), size)
	}
}

func TestQUICTransfer(t *testing.T) {
	r := newQUICRig(t, proxy.TransportQUIC, proxy.Config{})
	if r.in.QUICAddr("127.0.0.1:0") == nil {
		t.Fatal("inbound sidecar does not listen for QUIC")
	}
	roundTrip(t, r.out.OutboundAddr("default").String(), 8<<20)
	if got := value(r.outM.Handshakes.WithLabelValues("dial_quic", "ok")); got != 1 {
		t.Errorf("QUIC handshakes = %v, want 1", got)
	}
	if got := value(r.outM.Handshakes.WithLabelValues("dial", "ok")); got != 0 {
		t.Errorf("TCP handshakes = %v, want 0", got)
	}
}

func TestQUICManyConnectionsShareOneQUICConnection(t *testing.T) {
	r := newQUICRig(t, proxy.TransportQUIC, proxy.Config{})
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			roundTrip(t, r.out.OutboundAddr("default").String(), 64<<10+i)
		}()
	}
	wg.Wait()
	if got := value(r.outM.Handshakes.WithLabelValues("dial_quic", "ok")); got != 1 {
		t.Errorf("QUIC connections dialed = %v, want 1 for 100 proxied connections", got)
	}
	if got := value(r.outM.QUICStreams.WithLabelValues("open")); got != 100 {
		t.Errorf("streams opened = %v, want 100", got)
	}
}

func TestQUICRefusesDisallowedID(t *testing.T) {
	eu := newPKI(t, "eu.example")
	server := eu.source("spiffe://eu.example/pacs")
	events := &eventLog{}
	in := start(t, proxy.Config{Inbound: []proxy.InboundRoute{{Name: "default", Listen: "127.0.0.1:0", Upstream: echoServer(t), Allow: patterns(t, "spiffe://eu.example/lab/*")}}},
		proxy.Deps{Source: server, Events: events.sink})
	out := start(t, proxy.Config{Outbound: []proxy.OutboundRoute{{Name: "default", Listen: "127.0.0.1:0", Peer: in.InboundAddr("127.0.0.1:0").String(), PeerID: server.svid.ID, Transport: proxy.TransportQUIC}}},
		proxy.Deps{Source: eu.source("spiffe://eu.example/billing")})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go in.Run(ctx)
	go out.Run(ctx)
	s := openSession(t, out.OutboundAddr("default").String())
	if s.echo("x") {
		t.Fatal("disallowed ID moved data over QUIC")
	}
	waitFor(t, func() bool {
		ev := events.find("admission", "inbound")
		return len(ev) == 1 && ev[0].Reasons[0] == "id_not_allowed"
	})
}

func TestAutoFallsBackToTCPWhenUDPIsBlocked(t *testing.T) {
	r := newQUICRig(t, proxy.TransportAuto, proxy.Config{DisableQUIC: true})
	for i := range 3 {
		roundTrip(t, r.out.OutboundAddr("default").String(), 1<<20+i)
	}
	if got := value(r.outM.Handshakes.WithLabelValues("dial", "ok")); got != 3 {
		t.Errorf("TCP handshakes = %v, want 3", got)
	}
	// The fallback is remembered: QUIC was tried once, not three times.
	if got := value(r.outM.Handshakes.WithLabelValues("dial_quic", "peer_unreachable")); got != 1 {
		t.Errorf("QUIC attempts = %v, want 1", got)
	}
}

func TestQUICPeerRestart(t *testing.T) {
	eu := newPKI(t, "eu.example")
	server := eu.source("spiffe://eu.example/pacs")
	app := echoServer(t)
	route := proxy.InboundRoute{Name: "default", Listen: "127.0.0.1:0", Upstream: app, Allow: patterns(t, "spiffe://eu.example/lab/*")}
	in := start(t, proxy.Config{Inbound: []proxy.InboundRoute{route}}, proxy.Deps{Source: server})
	addr := in.InboundAddr("127.0.0.1:0").String()
	out := start(t, proxy.Config{Outbound: []proxy.OutboundRoute{{Name: "default", Listen: "127.0.0.1:0", Peer: addr, PeerID: server.svid.ID, Transport: proxy.TransportQUIC}}},
		proxy.Deps{Source: eu.source("spiffe://eu.example/lab/ws1")})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go out.Run(ctx)
	inCtx, stopIn := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { in.Run(inCtx); close(done) }()
	roundTrip(t, out.OutboundAddr("default").String(), 1<<20)

	stopIn()
	<-done
	route.Listen = addr // the restarted sidecar comes back on the same port
	in2 := start(t, proxy.Config{Inbound: []proxy.InboundRoute{route}}, proxy.Deps{Source: server})
	go in2.Run(ctx)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", out.OutboundAddr("default").String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, "ping")
		buf := make([]byte, 4)
		_, err = io.ReadFull(c, buf)
		c.Close()
		if err == nil && string(buf) == "ping" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new connection through the restarted peer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// value reads a counter's or gauge's current value.
func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	(<-ch).Write(&m)
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
