package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/medgate/medgate/identity"
)

// QUIC flow control: a stream may hold at most a sixth of the connection's
// window, so one bulk transfer leaves room for the small ones beside it.
const (
	quicStreamWindow     = 4 << 20
	quicConnectionWindow = 24 << 20
	quicKeepAlive        = 15 * time.Second
	quicMaxIdle          = 60 * time.Second
)

func (s *Server) quicConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           s.cfg.HandshakeTimeout,
		MaxIdleTimeout:                 quicMaxIdle,
		KeepAlivePeriod:                quicKeepAlive,
		MaxIncomingStreams:             int64(s.cfg.MaxSessions),
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     512 << 10,
		MaxStreamReceiveWindow:         quicStreamWindow,
		InitialConnectionReceiveWindow: 1 << 20,
		MaxConnectionReceiveWindow:     quicConnectionWindow,
		Allow0RTT:                      false,
	}
}

// quicListener is a QUIC listener on a UDP socket the server owns, so
// the port is free again as soon as the server has stopped.
type quicListener struct {
	*quic.Listener
	tr  *quic.Transport
	udp *net.UDPConn
}

func (l *quicListener) shutdown() {
	l.Listener.Close()
	l.tr.Close()
	l.udp.Close()
}

// listenQUIC listens on UDP at the port the TCP listener for addr got.
func (s *Server) listenQUIC(tcpAddr net.Addr) (*quicListener, error) {
	ta, ok := tcpAddr.(*net.TCPAddr)
	if !ok {
		return nil, errors.New("not a TCP address")
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ta.IP, Port: ta.Port, Zone: ta.Zone})
	if err != nil {
		return nil, err
	}
	tlsConf := s.serverTC.Clone()
	// QUIC handshakes fail inside quic-go; record refusals where they are
	// decided, so they are logged, counted and audited as over TCP.
	verify := tlsConf.VerifyConnection
	tlsConf.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err != nil {
			reason := string(identity.Classify(err))
			s.m.Handshakes.WithLabelValues("accept_quic", reason).Inc()
			ev := Event{Time: s.now(), Kind: "admission", Direction: "inbound", Verdict: "deny", Reasons: []string{reason}, Outcome: "handshake_refused"}
			var pe *identity.PeerError
			if errors.As(err, &pe) && !pe.ID.IsZero() {
				ev.PeerID = pe.ID.String()
			}
			s.log.Info("tunnel refused in handshake", "transport", "quic", "spiffe_id", ev.PeerID, "reason", reason, "err", err)
			s.events(ev)
		}
		return err
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(tlsConf, s.quicConfig())
	if err != nil {
		udp.Close()
		return nil, err
	}
	return &quicListener{Listener: ln, tr: tr, udp: udp}, nil
}

// serveQUIC accepts QUIC connections; every stream of one is a tunnel.
func (s *Server) serveQUIC(ctx context.Context, ln *quicListener, routes map[string]*InboundRoute) {
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		s.m.Handshakes.WithLabelValues("accept_quic", "ok").Inc()
		s.quicConns.add(conn)
		s.quicLoops.Add(1)
		go func() {
			defer s.quicLoops.Done()
			defer s.quicConns.remove(conn)
			for {
				st, err := conn.AcceptStream(ctx)
				if err != nil {
					return
				}
				s.m.QUICStreams.WithLabelValues("accept").Inc()
				if !s.track() {
					quicTunnel{st}.Abort() // draining: no new sessions
					continue
				}
				connID := s.connSeq.Add(1)
				go func() {
					defer s.wg.Done()
					s.setupInbound(ctx, quicTunnel{st}, conn.ConnectionState().TLS, conn.RemoteAddr(), conn.LocalAddr(), connID, time.Now(), routes, func() {})
				}()
			}
		}()
	}
}

// quicPool keeps one QUIC connection per remote sidecar, shared by every
// proxied connection to it.
type quicPool struct {
	s     *Server
	mu    sync.Mutex
	conns map[string]*quicPeer // by route name
}

type quicPeer struct {
	mu   sync.Mutex // held while dialing
	conn *quic.Conn
}

// open opens a stream to r's peer, dialing the connection when there is
// none or the last one has ended.
func (p *quicPool) open(ctx context.Context, r *OutboundRoute) (tunnel, error) {
	p.mu.Lock()
	if p.conns == nil {
		p.conns = map[string]*quicPeer{}
	}
	peer := p.conns[r.Name]
	if peer == nil {
		peer = &quicPeer{}
		p.conns[r.Name] = peer
	}
	p.mu.Unlock()

	for attempt := 0; attempt < 2; attempt++ {
		peer.mu.Lock()
		conn := peer.conn
		if conn == nil || conn.Context().Err() != nil {
			var err error
			conn, err = p.dial(ctx, r)
			if err != nil {
				peer.mu.Unlock()
				return nil, err
			}
			peer.conn = conn
		}
		peer.mu.Unlock()
		st, err := conn.OpenStreamSync(ctx)
		if err == nil {
			p.s.m.QUICStreams.WithLabelValues("open").Inc()
			return quicTunnel{st}, nil
		}
		if ctx.Err() != nil {
			return nil, &dialError{"peer_unreachable", err}
		}
		// The connection died under us (the peer restarted): dial anew.
		conn.CloseWithError(0, "")
	}
	return nil, &dialError{"peer_unreachable", errors.New("QUIC connection lost twice")}
}

func (p *quicPool) dial(ctx context.Context, r *OutboundRoute) (*quic.Conn, error) {
	s := p.s
	dctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout+s.cfg.HandshakeTimeout)
	defer cancel()
	conn, err := quic.DialAddr(dctx, r.Peer, identity.ClientConfig(s.src, identity.AllowID(r.PeerID), s.now), s.quicConfig())
	if err != nil {
		reason := identity.Classify(err)
		if reason == identity.ReasonOther || reason == identity.ReasonTimeout || reason == identity.ReasonClosed || errors.Is(err, context.DeadlineExceeded) {
			var te *quic.TransportError
			var pe *identity.PeerError
			if !errors.As(err, &pe) && !(errors.As(err, &te) && te.ErrorCode.IsCryptoError()) {
				reason = "peer_unreachable"
			}
		}
		s.m.Handshakes.WithLabelValues("dial_quic", string(reason)).Inc()
		return nil, &dialError{string(reason), fmt.Errorf("QUIC to %s: %w", r.Peer, err)}
	}
	s.m.Handshakes.WithLabelValues("dial_quic", "ok").Inc()
	s.quicConns.add(conn)
	go func() {
		<-conn.Context().Done()
		s.quicConns.remove(conn)
	}()
	return conn, nil
}

// closeAll closes every pooled connection.
func (p *quicPool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, peer := range p.conns {
		peer.mu.Lock()
		if peer.conn != nil {
			peer.conn.CloseWithError(0, "shutdown")
		}
		peer.mu.Unlock()
	}
}

// quicConnSet tracks live QUIC connections for metrics and shutdown.
type quicConnSet struct {
	s     *Server
	mu    sync.Mutex
	conns map[*quic.Conn]quic.ConnectionStats
}

func (q *quicConnSet) add(c *quic.Conn) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.conns == nil {
		q.conns = map[*quic.Conn]quic.ConnectionStats{}
	}
	q.conns[c] = quic.ConnectionStats{}
	q.s.m.QUICConns.Set(float64(len(q.conns)))
}

func (q *quicConnSet) remove(c *quic.Conn) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if last, ok := q.conns[c]; ok {
		q.account(c, last)
		delete(q.conns, c)
	}
	q.s.m.QUICConns.Set(float64(len(q.conns)))
}

// account adds what c did since last to the counters. Callers hold q.mu.
func (q *quicConnSet) account(c *quic.Conn, last quic.ConnectionStats) quic.ConnectionStats {
	st := c.ConnectionStats()
	m := q.s.m
	m.QUICPackets.WithLabelValues("sent").Add(float64(st.PacketsSent - min(last.PacketsSent, st.PacketsSent)))
	m.QUICPackets.WithLabelValues("received").Add(float64(st.PacketsReceived - min(last.PacketsReceived, st.PacketsReceived)))
	if st.PacketsLost > last.PacketsLost {
		m.QUICPackets.WithLabelValues("lost").Add(float64(st.PacketsLost - last.PacketsLost))
	}
	if st.SmoothedRTT > 0 {
		m.QUICRTT.Observe(st.SmoothedRTT.Seconds())
	}
	return st
}

// sample updates the QUIC metrics from every live connection.
func (q *quicConnSet) sample() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for c, last := range q.conns {
		q.conns[c] = q.account(c, last)
	}
}

func (q *quicConnSet) closeAll() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for c := range q.conns {
		c.CloseWithError(0, "shutdown")
	}
}
