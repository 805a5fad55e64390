package proxy

import (
	"container/list"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/medgate/medgate/crypto/keys"
	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/posture"
	"github.com/medgate/medgate/proxy/mask"
)

// InboundRoute accepts tunnels from remote sidecars and forwards admitted
// sessions to the local app.
type InboundRoute struct {
	// Name is what remote sidecars ask for in their hello.
	Name string
	// Listen is the TCP address for tunnels. Routes may share one.
	Listen string
	// Upstream is the local app's address.
	Upstream string
	// Allow lists the peers this route admits when no policy is
	// configured (see AllowList).
	Allow identity.Patterns
	// ProxyProtocol sends a PROXY protocol v2 header with the peer's
	// SPIFFE ID (TLV 0xE0) to the app before any data.
	ProxyProtocol bool
	// Protocol is what the app speaks: "tcp" (or empty: opaque bytes) or
	// a protocol with a codec in Deps.Codecs (hl7, ...). Only a route with
	// a codec can carry a session that must be de-identified.
	Protocol string
	// DisableInnerLayer admits sessions without the inner AES-256-GCM
	// layer, for peers in the same site. By default (false) a session must
	// carry it: both directions are sealed under data keys wrapped by the
	// data owner's keyring.
	DisableInnerLayer bool
}

// OutboundRoute accepts plaintext connections from the local app and
// carries them to a remote sidecar.
type OutboundRoute struct {
	// Name labels the route in logs and metrics.
	Name string
	// Listen is the local address the app connects to; keep it on
	// loopback: it is plaintext.
	Listen string
	// Peer is the remote sidecar's host:port.
	Peer string
	// PeerID is the SPIFFE ID the remote sidecar must present.
	PeerID spiffeid.ID
	// RemoteRoute is the inbound route asked for at the peer. Empty means
	// "default".
	RemoteRoute string
	// DisableInnerLayer sends without the inner layer; the peer's route
	// must allow that. By default (false) the session is sealed.
	DisableInnerLayer bool
	// Protocol is what the local app speaks, as for InboundRoute.
	Protocol string
	// Transport is tcp (the default when empty), quic, or auto: try QUIC,
	// fall back to TCP when UDP does not get through.
	Transport string
}

// Config holds the data path's settings. Zero values mean the defaults
// documented on each field.
type Config struct {
	Inbound  []InboundRoute
	Outbound []OutboundRoute
	// HandshakeTimeout bounds TLS plus the hello exchange. Default 5s.
	HandshakeTimeout time.Duration
	// ConnectTimeout bounds dialing a peer or the local app. Default 5s.
	ConnectTimeout time.Duration
	// IdleTimeout closes a session with no bytes either way. Default 15m.
	IdleTimeout time.Duration
	// DrainTimeout is how long shutdown waits for live sessions before
	// closing them. Default 30s.
	DrainTimeout time.Duration
	// MaxSessions bounds proxied connections, both directions together.
	// Default 4096.
	MaxSessions int
	// MaxPendingHandshakes bounds tunnel connections not yet admitted. At
	// the limit a new connection evicts the oldest pending one if that has
	// waited longer than a legitimate handshake would (EvictAfter);
	// otherwise the new one is refused. Default 1024.
	MaxPendingHandshakes int
	// EvictAfter is how long a pending handshake is protected from
	// eviction. Default 250ms.
	EvictAfter time.Duration
	// DisableQUIC keeps inbound listeners to TCP. By default each one also
	// listens for QUIC on UDP at the same port number.
	DisableQUIC bool
	// QUICProbeTimeout bounds an auto route's QUIC attempt before it falls
	// back to TCP. Default 2s.
	QUICProbeTimeout time.Duration
	// FallbackFor is how long an auto route keeps to TCP after QUIC did
	// not get through to a peer. Default 5m.
	FallbackFor time.Duration
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HandshakeTimeout, 5*time.Second)
	def(&c.ConnectTimeout, 5*time.Second)
	def(&c.IdleTimeout, 15*time.Minute)
	def(&c.DrainTimeout, 30*time.Second)
	if c.MaxSessions <= 0 {
		c.MaxSessions = 4096
	}
	if c.MaxPendingHandshakes <= 0 {
		c.MaxPendingHandshakes = 1024
	}
	def(&c.EvictAfter, 250*time.Millisecond)
	def(&c.QUICProbeTimeout, 2*time.Second)
	def(&c.FallbackFor, 5*time.Minute)
	for i := range c.Outbound {
		if c.Outbound[i].RemoteRoute == "" {
			c.Outbound[i].RemoteRoute = "default"
		}
	}
}

// Deps are the data path's collaborators.
type Deps struct {
	// Source provides the local SVID and trust bundles. Required.
	Source identity.Source
	// Decider admits sessions on inbound routes. Nil means the routes'
	// allow lists (AllowList).
	Decider posture.Decider
	Log     *slog.Logger
	// Metrics may be nil; then nothing is registered anywhere.
	Metrics *Metrics
	// Events receives access events; nil drops them.
	Events EventSink
	// Now defaults to time.Now.
	Now func() time.Time
	// Posture provides this device's posture token for outbound routes;
	// nil sends none.
	Posture PostureProvider
	// Keyring wraps the data keys of the inner layer and unwraps the
	// peer's. Required when any route keeps the inner layer on.
	Keyring keys.Keyring
	// Codecs mask protocols, by route protocol name.
	Codecs map[string]Codec
	// Profiles resolves the masking profile a deidentify decision names.
	Profiles ProfileSource
	// MaskEnv is what masking needs besides the profile (the keyed
	// pseudonym maker).
	MaskEnv mask.Env
}

// Server runs a sidecar's routes. Create it with New, then call Run.
type Server struct {
	cfg      Config
	src      identity.Source
	decider  atomic.Pointer[posture.Decider]
	log      *slog.Logger
	m        *Metrics
	events   EventSink
	now      func() time.Time
	posture  PostureProvider
	keyring  keys.Keyring
	codecs   map[string]Codec
	profiles ProfileSource
	maskEnv  mask.Env

	inbound  map[string]map[string]*InboundRoute // listen address -> route name -> route
	serverTC *tls.Config
	clientTC map[string]*tls.Config // by outbound route name

	mu        sync.Mutex
	listeners map[string]net.Listener // "in:ADDR" or "out:NAME"
	sessions  map[*session]struct{}
	draining  bool
	wg        sync.WaitGroup
	pending   pendingSet
	connSeq   atomic.Uint64
	active    atomic.Int64

	quicListeners map[string]*quicListener // by inbound listen address
	quicLoops     sync.WaitGroup           // per-connection stream loops
	quic          quicPool
	quicConns     quicConnSet
	fallback      fallbacks
}

// New validates cfg and returns a Server.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg.setDefaults()
	if deps.Source == nil {
		return nil, errors.New("proxy: no SVID source")
	}
	if len(cfg.Inbound) == 0 && len(cfg.Outbound) == 0 {
		return nil, errors.New("proxy: no routes: configure at least one inbound or outbound route")
	}
	s := &Server{
		cfg:       cfg,
		src:       deps.Source,
		log:       deps.Log,
		m:         deps.Metrics,
		events:    deps.Events,
		now:       deps.Now,
		posture:   deps.Posture,
		keyring:   deps.Keyring,
		codecs:    deps.Codecs,
		profiles:  deps.Profiles,
		maskEnv:   deps.MaskEnv,
		inbound:   map[string]map[string]*InboundRoute{},
		listeners: map[string]net.Listener{},
		sessions:  map[*session]struct{}{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.m == nil {
		s.m = NewMetrics(nil)
	}
	if s.events == nil {
		s.events = func(Event) {}
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.quic.s, s.quicConns.s = s, s
	s.quicListeners = map[string]*quicListener{}
	s.pending.max = cfg.MaxPendingHandshakes
	s.pending.minAge = cfg.EvictAfter
	allow := AllowList{}
	var errs []error
	names := map[string]bool{}
	for i := range cfg.Inbound {
		r := &cfg.Inbound[i]
		if names["in:"+r.Name] {
			errs = append(errs, fmt.Errorf("proxy: inbound route %q defined twice", r.Name))
		}
		names["in:"+r.Name] = true
		if s.inbound[r.Listen] == nil {
			s.inbound[r.Listen] = map[string]*InboundRoute{}
		}
		s.inbound[r.Listen][r.Name] = r
		allow[r.Name] = r.Allow
		if !r.DisableInnerLayer && deps.Keyring == nil {
			errs = append(errs, fmt.Errorf("proxy: inbound route %q: the inner encryption layer needs a keyring (or disable it for the route)", r.Name))
		}
		if r.Protocol != "" && r.Protocol != "tcp" && deps.Codecs[r.Protocol] == nil {
			errs = append(errs, fmt.Errorf("proxy: inbound route %q: no codec for protocol %q", r.Name, r.Protocol))
		}
	}
	for _, r := range cfg.Outbound {
		if names["out:"+r.Name] {
			errs = append(errs, fmt.Errorf("proxy: outbound route %q defined twice", r.Name))
		}
		names["out:"+r.Name] = true
		if r.PeerID.IsZero() {
			errs = append(errs, fmt.Errorf("proxy: outbound route %q: no peer SPIFFE ID", r.Name))
		}
		if !r.DisableInnerLayer && deps.Keyring == nil {
			errs = append(errs, fmt.Errorf("proxy: outbound route %q: the inner encryption layer needs a keyring (or disable it for the route)", r.Name))
		}
		if r.Protocol != "" && r.Protocol != "tcp" && deps.Codecs[r.Protocol] == nil {
			errs = append(errs, fmt.Errorf("proxy: outbound route %q: no codec for protocol %q", r.Name, r.Protocol))
		}
		if err := validTransport(r.Transport); err != nil {
			errs = append(errs, fmt.Errorf("proxy: outbound route %q: %w", r.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	d := deps.Decider
	if d == nil {
		d = allow
	}
	s.SetDecider(d)
	// Any peer whose SVID verifies gets as far as the hello; the route's
	// admission then decides, so a refusal for an unlisted ID is an
	// access event with a reason rather than a bare TLS alert.
	s.serverTC = identity.ServerConfig(s.src, func(spiffeid.ID) error { return nil }, s.now)
	// One client configuration per route, shared by its connections: it
	// fetches the SVID and bundles from the source at each handshake.
	s.clientTC = map[string]*tls.Config{}
	for _, r := range cfg.Outbound {
		s.clientTC[r.Name] = identity.ClientConfig(s.src, identity.AllowID(r.PeerID), s.now)
	}
	return s, nil
}

// SetDecider replaces the admission decider atomically and judges every
// live inbound session again under it: those it no longer admits on the
// same terms are closed, the others keep flowing.
func (s *Server) SetDecider(d posture.Decider) {
	if s.decider.Swap(&d) != nil {
		s.Reevaluate()
	}
}

// Reevaluate judges every live inbound session again, for example after
// the decider's policy changed in place. It does not wait.
func (s *Server) Reevaluate() { go s.rejudgeAll("policy_changed") }

// Listen binds every route's listener. Run calls it when it has not been
// called; calling it first lets the caller report bind errors and learn
// the addresses.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.listeners) > 0 {
		return nil
	}
	var errs []error
	for addr := range s.inbound {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("proxy: inbound listen %s: %w", addr, err))
			continue
		}
		s.listeners["in:"+addr] = ln
		if !s.cfg.DisableQUIC {
			ql, err := s.listenQUIC(ln.Addr())
			if err != nil {
				errs = append(errs, fmt.Errorf("proxy: inbound listen %s: QUIC on UDP port %d: %w", addr, ln.Addr().(*net.TCPAddr).Port, err))
				continue
			}
			s.quicListeners[addr] = ql
		}
	}
	for _, r := range s.cfg.Outbound {
		ln, err := net.Listen("tcp", r.Listen)
		if err != nil {
			errs = append(errs, fmt.Errorf("proxy: outbound route %q listen %s: %w", r.Name, r.Listen, err))
			continue
		}
		if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
			s.log.Warn("outbound listener is not on loopback; the app's plaintext crosses the network to reach it", "route", r.Name, "addr", ln.Addr().String())
		}
		s.listeners["out:"+r.Name] = ln
	}
	if err := errors.Join(errs...); err != nil {
		for k, ln := range s.listeners {
			ln.Close()
			delete(s.listeners, k)
		}
		for k, ql := range s.quicListeners {
			ql.shutdown()
			delete(s.quicListeners, k)
		}
		return err
	}
	return nil
}

// QUICAddr returns the bound UDP address of the QUIC listener beside the
// inbound listener configured as listen, or nil.
func (s *Server) QUICAddr(listen string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ql, ok := s.quicListeners[listen]; ok {
		return ql.Addr()
	}
	return nil
}

// InboundAddr returns the bound address of the inbound listener configured
// as listen, or nil.
func (s *Server) InboundAddr(listen string) net.Addr { return s.addr("in:" + listen) }

// OutboundAddr returns the bound address of the named outbound route, or nil.
func (s *Server) OutboundAddr(name string) net.Addr { return s.addr("out:" + name) }

func (s *Server) addr(key string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ln, ok := s.listeners[key]; ok {
		return ln.Addr()
	}
	return nil
}

// ActiveSessions returns the number of proxied connections open now.
func (s *Server) ActiveSessions() int64 { return s.active.Load() }

// Run serves until ctx ends, then stops accepting, waits up to
// DrainTimeout for live sessions to finish, and closes the rest. It returns
// nil after a clean drain.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	var accepting sync.WaitGroup
	for key, ln := range s.listeners {
		accepting.Add(1)
		go func() {
			defer accepting.Done()
			if key[:3] == "in:" {
				s.acceptLoop(ctx, ln, func(c net.Conn) { s.serveInbound(ctx, c, s.inbound[key[3:]]) })
				return
			}
			r := s.outboundRoute(key[4:])
			s.acceptLoop(ctx, ln, func(c net.Conn) { s.serveOutbound(ctx, c, r) })
		}()
	}
	// Streams of QUIC connections keep serving while sessions drain, so
	// they stop on their own context, which outlives ctx by the drain.
	quicCtx, stopQUIC := context.WithCancel(context.WithoutCancel(ctx))
	defer stopQUIC()
	for addr, ql := range s.quicListeners {
		accepting.Add(1)
		go func() {
			defer accepting.Done()
			s.serveQUIC(quicCtx, ql, s.inbound[addr])
		}()
	}
	s.mu.Unlock()
	sampler := time.NewTicker(5 * time.Second)
	defer sampler.Stop()
	go func() {
		for {
			select {
			case <-quicCtx.Done():
				return
			case <-sampler.C:
				s.quicConns.sample()
			}
		}
	}()

	<-ctx.Done()
	s.mu.Lock()
	s.draining = true
	for _, ln := range s.listeners {
		ln.Close()
	}
	for _, ql := range s.quicListeners {
		ql.Close() // new QUIC connections stop; live ones keep their streams
	}
	s.mu.Unlock()
	s.pending.closeAll()
	accepting.Wait()
	defer func() {
		stopQUIC()
		s.quic.closeAll()
		s.quicConns.closeAll()
		s.quicLoops.Wait()
		for _, ql := range s.quicListeners {
			ql.shutdown()
		}
	}()

	n := s.active.Load()
	if n > 0 {
		s.log.Info("draining", "sessions", n, "timeout", s.cfg.DrainTimeout)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(s.cfg.DrainTimeout):
	}
	s.mu.Lock()
	left := len(s.sessions)
	for sess := range s.sessions {
		sess.abort("drain_timeout")
	}
	s.mu.Unlock()
	<-done
	s.log.Warn("drain timed out; closed live sessions", "sessions", left)
	return nil
}

func (s *Server) outboundRoute(name string) *OutboundRoute {
	for i := range s.cfg.Outbound {
		if s.cfg.Outbound[i].Name == name {
			return &s.cfg.Outbound[i]
		}
	}
	return nil
}

func (s *Server) acceptLoop(ctx context.Context, ln net.Listener, serve func(net.Conn)) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Error("accept failed", "addr", ln.Addr().String(), "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !s.track() {
			c.Close()
			continue
		}
		go func() {
			defer s.wg.Done()
			serve(c)
		}()
	}
}

// track counts a connection about to be served, unless the server is
// draining: then it returns false and the caller turns the connection away.
// Every tracked goroutine calls s.wg.Done when it ends.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.wg.Add(1)
	return true
}

func newSessionID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// pendingSet tracks tunnel connections that have not been admitted yet.
// At its limit, adding one evicts the oldest when that one has been pending
// longer than minAge: a flood of silent or slow clients cannot keep a real
// one out, and a burst of real ones does not cut handshakes that are about
// to finish (the newcomer is refused instead).
type pendingSet struct {
	mu     sync.Mutex
	max    int
	minAge time.Duration
	l      list.List // of *pendingConn
	closed bool
}

type pendingConn struct {
	c       net.Conn
	since   time.Time
	evicted atomic.Bool
}

// add registers c. When c itself is refused, the returned pendingConn is
// already marked evicted and c is closed.
func (p *pendingSet) add(c net.Conn) (*list.Element, *pendingConn) {
	pc := &pendingConn{c: c, since: time.Now()}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		pc.evicted.Store(true)
		return nil, pc
	}
	for p.l.Len() >= p.max {
		old := p.l.Front().Value.(*pendingConn)
		if pc.since.Sub(old.since) < p.minAge {
			c.Close()
			pc.evicted.Store(true)
			return nil, pc
		}
		p.l.Remove(p.l.Front())
		old.evicted.Store(true)
		old.c.Close()
	}
	return p.l.PushBack(pc), pc
}

func (p *pendingSet) remove(e *list.Element) {
	if e == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.l.Remove(e) // a no-op when e was evicted already
}

func (p *pendingSet) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for e := p.l.Front(); e != nil; e = e.Next() {
		e.Value.(*pendingConn).c.Close()
	}
	p.l.Init()
}
