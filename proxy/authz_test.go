package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/posture"
	"github.com/medgate/medgate/proxy"
)

// tokenDecider admits peers matching allow; when requireToken is set, the
// posture token must be "exp=UNIXMILLI" in the future, and the decision is
// valid until then.
type tokenDecider struct {
	allow        identity.Patterns
	requireToken bool
	version      string
}

func (d tokenDecider) Decide(req posture.Request) posture.Decision {
	dec := posture.Decision{PolicyVersion: d.version}
	if !d.allow.Match(req.PeerID) {
		dec.Reasons = []posture.Reason{posture.ReasonIDNotAllowed}
		return dec
	}
	if d.requireToken {
		ms, err := strconv.ParseInt(strings.TrimPrefix(string(req.PostureToken), "exp="), 10, 64)
		if err != nil {
			dec.Reasons = []posture.Reason{"token_missing"}
			return dec
		}
		exp := time.UnixMilli(ms)
		if !req.Now.Before(exp) {
			dec.Reasons = []posture.Reason{"token_expired"}
			return dec
		}
		dec.ValidUntil = exp
	}
	dec.Verdict = posture.Allow
	dec.Reasons = []posture.Reason{posture.ReasonAllowed}
	return dec
}

func patterns(t *testing.T, s string) identity.Patterns {
	t.Helper()
	ps, err := identity.ParsePatterns(s)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// liveSession is an app connection through an outbound sidecar to the echo
// app behind the inbound one.
type liveSession struct {
	c net.Conn
	r *bufio.Reader
}

// openSession connects to addr. A sidecar that refuses the session may
// reset the connection before Dial returns; the session then echoes
// nothing.
func openSession(t *testing.T, addr string) *liveSession {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return &liveSession{}
	}
	t.Cleanup(func() { c.Close() })
	return &liveSession{c, bufio.NewReader(c)}
}

// echo reports whether a line still makes the round trip.
func (l *liveSession) echo(msg string) bool {
	if l.c == nil {
		return false
	}
	l.c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintln(l.c, msg); err != nil {
		return false
	}
	got, err := l.r.ReadString('\n')
	return err == nil && strings.TrimSpace(got) == msg
}

type authzRig struct {
	in     *proxy.Server
	outs   map[string]*proxy.Server
	events *eventLog
}

func newAuthzRig(t *testing.T, d posture.Decider, clients map[string]proxy.PostureProvider) *authzRig {
	t.Helper()
	eu := newPKI(t, "eu.example")
	server := eu.source("spiffe://eu.example/pacs")
	rig := &authzRig{outs: map[string]*proxy.Server{}, events: &eventLog{}}
	rig.in = start(t, proxy.Config{Inbound: []proxy.InboundRoute{{Name: "default", Listen: "127.0.0.1:0", Upstream: echoServer(t)}}},
		proxy.Deps{Source: server, Decider: d, Events: rig.events.sink})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	servers := []*proxy.Server{rig.in}
	for id, provider := range clients {
		out := start(t, proxy.Config{Outbound: []proxy.OutboundRoute{{Name: "default", Listen: "127.0.0.1:0", Peer: rig.in.InboundAddr("127.0.0.1:0").String(), PeerID: server.svid.ID}}},
			proxy.Deps{Source: eu.source(id), Posture: provider, Events: rig.events.sink})
		rig.outs[id] = out
		servers = append(servers, out)
	}
	var running atomic.Int32
	for _, s := range servers {
		running.Add(1)
		go func() {
			s.Run(ctx)
			if running.Add(-1) == 0 {
				close(done)
			}
		}()
	}
	t.Cleanup(func() { cancel(); <-done })
	return rig
}

func (r *authzRig) dial(t *testing.T, id string) *liveSession {
	return openSession(t, r.outs[id].OutboundAddr("default").String())
}

func TestPolicyChangeClosesOnlySessionsNoLongerAdmitted(t *testing.T) {
	ws1, ws2 := "spiffe://eu.example/lab/ws1", "spiffe://eu.example/lab/ws2"
	rig := newAuthzRig(t, tokenDecider{allow: patterns(t, "spiffe://eu.example/lab/*"), version: "v1"}, map[string]proxy.PostureProvider{ws1: nil, ws2: nil})
	s1, s2 := rig.dial(t, ws1), rig.dial(t, ws2)
	if !s1.echo("a") || !s2.echo("a") {
		t.Fatal("sessions not up")
	}
	rig.in.SetDecider(tokenDecider{allow: patterns(t, ws1), version: "v2"})
	waitFor(t, func() bool { return !s2.echo("b") })
	for i := range 5 {
		if !s1.echo(fmt.Sprint("still admitted ", i)) {
			t.Fatal("a session the new policy still admits was closed")
		}
	}
	evs := rig.events.find("reauthorization", "inbound")
	var revoked, kept int
	for _, e := range evs {
		switch {
		case e.PeerID == ws2 && e.Verdict == "deny" && e.Reasons[0] == "id_not_allowed" && e.PolicyVersion == "v2":
			revoked++
		case e.PeerID == ws1 && e.Verdict == "allow":
			kept++
		}
	}
	if revoked != 1 || kept != 1 {
		t.Errorf("reauthorization events: %d revoked, %d kept; want 1 and 1: %+v", revoked, kept, evs)
	}
	waitFor(t, func() bool {
		for _, e := range rig.events.find("session_end", "outbound") {
			if e.Outcome == "closed_by_peer:id_not_allowed" {
				return true
			}
		}
		return false
	})
}

func TestSessionClosedWhenPostureTokenLapses(t *testing.T) {
	const life = 600 * time.Millisecond
	stale := []byte(fmt.Sprintf("exp=%d", time.Now().Add(life).UnixMilli()))
	stuck := func() ([]byte, time.Time, error) { // the device stopped refreshing
		ms, _ := strconv.ParseInt(strings.TrimPrefix(string(stale), "exp="), 10, 64)
		return stale, time.UnixMilli(ms), nil
	}
	fresh := func() ([]byte, time.Time, error) {
		exp := time.Now().Add(life)
		return []byte(fmt.Sprintf("exp=%d", exp.UnixMilli())), exp, nil
	}
	stuckID, freshID := "spiffe://eu.example/lab/stuck", "spiffe://eu.example/lab/fresh"
	rig := newAuthzRig(t, tokenDecider{allow: patterns(t, "spiffe://eu.example/lab/*"), requireToken: true, version: "v1"},
		map[string]proxy.PostureProvider{stuckID: stuck, freshID: fresh})
	sStuck, sFresh := rig.dial(t, stuckID), rig.dial(t, freshID)
	if !sStuck.echo("a") || !sFresh.echo("a") {
		t.Fatal("sessions not up")
	}
	start := time.Now()
	waitFor(t, func() bool { return !sStuck.echo("b") })
	if took := time.Since(start); took > life+time.Second {
		t.Errorf("expired session closed after %s, token lived %s", took, life)
	}
	// The refreshed session outlives several token lifetimes.
	for time.Since(start) < 3*life {
		if !sFresh.echo("refreshing") {
			t.Fatal("a session whose posture was refreshed in band was closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSessionClosedWhenPeerSVIDExpires: a TLS session keeps the
// certificate it began with, so the sidecar ends it when that expires.
func TestSessionClosedWhenPeerSVIDExpires(t *testing.T) {
	eu := newPKI(t, "eu.example")
	server := eu.source("spiffe://eu.example/pacs")
	events := &eventLog{}
	in := start(t, proxy.Config{Inbound: []proxy.InboundRoute{{Name: "default", Listen: "127.0.0.1:0", Upstream: echoServer(t), Allow: patterns(t, "spiffe://eu.example/*")}}},
		proxy.Deps{Source: server, Events: events.sink})
	// The client's SVID expires two seconds from now.
	out := start(t, proxy.Config{Outbound: []proxy.OutboundRoute{{Name: "default", Listen: "127.0.0.1:0", Peer: in.InboundAddr("127.0.0.1:0").String(), PeerID: server.svid.ID}}},
		proxy.Deps{Source: eu.sourceTTL("spiffe://eu.example/lab", 2*time.Second)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go in.Run(ctx)
	go out.Run(ctx)
	s := openSession(t, out.OutboundAddr("default").String())
	if !s.echo("a") {
		t.Fatal("session not up")
	}
	waitFor(t, func() bool { return !s.echo("b") })
	waitFor(t, func() bool {
		for _, e := range events.find("reauthorization", "inbound") {
			if e.Verdict == "deny" && e.Reasons[0] == "svid_expired" {
				return true
			}
		}
		return false
	})
}
