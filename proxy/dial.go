package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/medgate/medgate/identity"
)

// Transports an outbound route may use.
const (
	TransportTCP  = "tcp"
	TransportQUIC = "quic"
	// TransportAuto tries QUIC and falls back to TCP when UDP does not get
	// through, remembering the fallback per peer for FallbackFor.
	TransportAuto = "auto"
)

// dialError is a failure to reach or authenticate a peer, with the reason
// code the session records.
type dialError struct {
	reason string
	err    error
}

func (e *dialError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dialTunnel opens a tunnel to r's peer over the route's transport.
func (s *Server) dialTunnel(ctx context.Context, r *OutboundRoute, start time.Time) (tunnel, error) {
	switch r.Transport {
	case TransportQUIC:
		return s.quic.open(ctx, r)
	case TransportAuto:
		if s.fallback.useQUIC(r.Peer, s.now()) {
			qctx, cancel := context.WithTimeout(ctx, s.cfg.QUICProbeTimeout)
			t, err := s.quic.open(qctx, r)
			cancel()
			if err == nil {
				return t, nil
			}
			var de *dialError
			if errors.As(err, &de) && de.reason != "peer_unreachable" {
				// The peer answered over QUIC and refused: falling back
				// would only ask again.
				return nil, err
			}
			s.fallback.markTCP(r.Peer, s.now().Add(s.cfg.FallbackFor))
			s.log.Warn("QUIC did not get through; falling back to TCP", "route", r.Name, "peer", r.Peer, "retry_quic_after", s.cfg.FallbackFor, "err", err)
		}
	}
	return s.dialTCP(ctx, r, start)
}

func (s *Server) dialTCP(ctx context.Context, r *OutboundRoute, start time.Time) (tunnel, error) {
	d := net.Dialer{Timeout: s.cfg.ConnectTimeout}
	raw, err := d.DialContext(ctx, "tcp", r.Peer)
	if err != nil {
		return nil, &dialError{"peer_unreachable", err}
	}
	raw.SetDeadline(start.Add(s.cfg.ConnectTimeout + s.cfg.HandshakeTimeout))
	tun, tc := newTCPTunnel(raw, func(c net.Conn) *tls.Conn { return tls.Client(c, s.clientTC[r.Name]) })
	if err := tc.HandshakeContext(ctx); err != nil {
		reason := identity.Classify(err)
		s.m.Handshakes.WithLabelValues("dial", string(reason)).Inc()
		raw.Close()
		return nil, &dialError{string(reason), err}
	}
	s.m.Handshakes.WithLabelValues("dial", "ok").Inc()
	return tun, nil
}

// fallbacks remembers, per peer, until when an auto route uses TCP.
type fallbacks struct {
	mu    sync.Mutex
	until map[string]time.Time
}

func (f *fallbacks) useQUIC(peer string, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return now.After(f.until[peer])
}

func (f *fallbacks) markTCP(peer string, until time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.until == nil {
		f.until = map[string]time.Time{}
	}
	f.until[peer] = until
}

func validTransport(t string) error {
	switch t {
	case "", TransportTCP, TransportQUIC, TransportAuto:
		return nil
	}
	return fmt.Errorf("transport %q: want tcp, quic or auto", t)
}
