package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/medgate/medgate/crypto/stream"
	"github.com/medgate/medgate/proxy/mask"
)

// session is one admitted, proxied connection: the app's plaintext
// connection and the tunnel.
type session struct {
	s         *Server
	app       net.Conn
	tun       tunnel
	route     string
	direction string
	id        string
	connID    uint64
	peerID    string
	start     time.Time
	// adm is set on inbound sessions: what they were admitted on.
	adm *admission
	// inner holds the inner layer's keys; nil when the session runs
	// without it.
	inner *innerKeys
	// protocol is the route's protocol; masking is set when the data this
	// side sends must be de-identified.
	protocol string
	masking  *masking
	// posture is the token an outbound session last sent.
	posture        []byte
	postureExpires time.Time

	last      atomic.Int64 // unix nanoseconds of the last byte either way
	closeOnce sync.Once
	outcome   atomic.Pointer[string]
}

// abort ends the session at once with the given outcome, unless it already
// has one.
func (ss *session) abort(outcome string) {
	ss.outcome.CompareAndSwap(nil, &outcome)
	ss.closeOnce.Do(func() {
		abort(ss.app)
		ss.tun.Abort()
	})
}

// runSession registers ss, then carries it on a goroutine of its own and
// returns at once. The goroutine that calls it ran the handshake and the
// admission, which grow its stack several times over what a copy loop
// needs; it ends here, and an idle session does not keep that stack for its
// lifetime. For the same reason the session's goroutine starts with the
// copy loops: what runs before them (logging, above all) runs here. The
// session's goroutine is tracked in s.wg, as the caller is.
func (s *Server) runSession(ss *session) {
	if !s.openSession(ss) {
		return
	}
	s.wg.Add(1) // the caller's own count is held: Run cannot be past Wait
	go func() {
		defer s.wg.Done()
		s.carry(ss)
	}()
}

// carry carries bytes both ways until both directions have ended, then
// records the session's end. It owns app and tun and closes both. Its
// frame stays under an idle session's copy loop for the session's
// lifetime, so the bookkeeping after the loops, with its large
// temporaries, is in closeSession.
func (s *Server) carry(ss *session) {
	ss.last.Store(time.Now().UnixNano())
	activity := func(int) { ss.last.Store(time.Now().UnixNano()) }
	idle := s.cfg.IdleTimeout
	var watchdog *time.Timer
	watchdog = time.AfterFunc(idle, func() {
		if since := time.Since(time.Unix(0, ss.last.Load())); since < idle {
			watchdog.Reset(idle - since)
			return
		}
		ss.abort("idle_timeout")
	})

	if ss.adm != nil {
		ss.adm.mu.Lock()
		s.watch(ss)
		ss.adm.mu.Unlock()
		defer func() {
			ss.adm.mu.Lock()
			ss.adm.ended = true
			if ss.adm.timer != nil {
				ss.adm.timer.Stop()
			}
			ss.adm.mu.Unlock()
		}()
	}
	if ss.posture != nil && s.posture != nil {
		defer s.schedulePostureRefresh(ss, ss.posture, ss.postureExpires)()
	}
	fr := &frameReader{r: ss.tun}
	if ss.adm != nil {
		fr.onPosture = s.onPosture(ss)
	}

	var toPeer, fromPeer int64
	var upErr, downErr error
	var tw *tunnelWriter
	if ss.masking != nil {
		var err error
		if tw, err = newTunnelWriter(ss); err != nil {
			ss.abort("internal_error")
		}
	}
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		switch {
		case ss.masking != nil && tw == nil:
			upErr = errors.New("proxy: no tunnel writer for a masked session") // never unmasked
		case tw != nil:
			toPeer, upErr = s.pumpMasked(ss, tw, activity)
		case ss.inner != nil:
			toPeer, upErr = pumpSealed(ss.tun, ss.app, ss.inner, activity)
		default:
			toPeer, upErr = pumpToTunnel(ss.tun, ss.app, activity)
		}
		if upErr != nil {
			ss.abort(outcomeOf(upErr, "app_error"))
		}
	}()
	var src io.Reader = fr
	if ss.inner != nil {
		src, downErr = openSealed(fr, ss.inner)
	}
	switch {
	case downErr != nil:
	case tw != nil && ss.masking.fromPeer != nil:
		// The peer's data passes through the codec, which follows the
		// protocol's state; a refusal it sends goes back into the tunnel.
		cw := &countingWriter{w: ss.app, activity: activity}
		downErr = ss.masking.fromPeer(&byteCounter{w: cw, n: &fromPeer}, src, tw, s.objectEvent(ss))
	case ss.inner != nil:
		// The record reader writes each opened segment straight to the
		// app, without a copy through a pump buffer.
		fromPeer, downErr = src.(io.WriterTo).WriteTo(&countingWriter{w: ss.app, activity: activity})
	default:
		fromPeer, downErr = pumpFromTunnel(ss.app, fr, activity)
	}
	if downErr != nil {
		ss.abort(outcomeOf(downErr, "tunnel_error"))
	} else {
		closeWrite(ss.app)
	}
	<-upDone
	watchdog.Stop()
	s.closeSession(ss, toPeer, fromPeer)
}

// openSession registers ss as live, unless the server is draining: then it
// aborts ss and returns false.
func (s *Server) openSession(ss *session) bool {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		ss.abort("shutdown")
		return false
	}
	s.sessions[ss] = struct{}{}
	s.mu.Unlock()
	s.active.Add(1)
	s.m.ConnsOpen.WithLabelValues(ss.route, ss.direction).Inc()
	s.log.Info("connection open", ss.logAttrs()...)
	return true
}

// logAttrs are the attributes of the session's open and close log
// records. They are made for each record rather than kept in a logger for
// the session's lifetime.
func (ss *session) logAttrs(more ...any) []any {
	return append([]any{"route", ss.route, "direction", ss.direction, "conn_id", ss.connID, "session_id", ss.id, "spiffe_id", ss.peerID}, more...)
}

// closeSession closes what is left of ss once both directions have ended
// and records its end.
func (s *Server) closeSession(ss *session, toPeer, fromPeer int64) {
	ok := "ok"
	ss.outcome.CompareAndSwap(nil, &ok)
	ss.closeOnce.Do(func() {
		ss.tun.Close()
		ss.app.Close()
	})

	if ss.inner != nil {
		clear(ss.inner.send)
		clear(ss.inner.recv)
	}
	outcome := *ss.outcome.Load()
	dur := time.Since(ss.start)
	s.m.ConnsOpen.WithLabelValues(ss.route, ss.direction).Dec()
	s.active.Add(-1)
	s.m.ConnsTotal.WithLabelValues(ss.route, ss.direction, outcome).Inc()
	s.m.Bytes.WithLabelValues(ss.route, "app_to_peer").Add(float64(toPeer))
	s.m.Bytes.WithLabelValues(ss.route, "peer_to_app").Add(float64(fromPeer))
	s.m.ConnDuration.WithLabelValues(ss.route, ss.direction).Observe(dur.Seconds())
	level := slog.LevelInfo
	if outcome != "ok" {
		level = slog.LevelWarn
	}
	s.log.Log(context.Background(), level, "connection closed", ss.logAttrs("bytes_to_peer", toPeer, "bytes_from_peer", fromPeer, "duration", dur, "outcome", outcome)...)
	s.events(Event{
		Time: s.now(), Kind: "session_end", Route: ss.route, Direction: ss.direction,
		SessionID: ss.id, PeerID: ss.peerID, BytesToPeer: toPeer, BytesFromPeer: fromPeer,
		DurationMS: dur.Milliseconds(), Outcome: outcome,
	})
	s.mu.Lock()
	delete(s.sessions, ss)
	s.mu.Unlock()
}

func outcomeOf(err error, fallback string) string {
	var sc *SessionClosedError
	switch {
	case errors.As(err, &sc):
		return "closed_by_peer:" + sc.Reason
	case errors.Is(err, errTruncated), errors.Is(err, stream.ErrTruncated):
		return "truncated"
	case errors.Is(err, stream.ErrAuthFailed), errors.Is(err, stream.ErrHeader), errors.Is(err, stream.ErrWrongKey),
		errors.Is(err, stream.ErrTrailingData), errors.Is(err, errContext):
		return "integrity_error"
	case errors.Is(err, ErrUnexpectedFrame), errors.Is(err, ErrFrameTooLarge):
		return "protocol_error"
	case errors.Is(err, mask.ErrUnmaskable):
		return reasonUnmaskable
	case errors.Is(err, io.ErrClosedPipe), errors.Is(err, net.ErrClosed):
		return "closed"
	}
	return fallback
}
