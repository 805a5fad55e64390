package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/medgate/medgate/crypto/stream"
	"github.com/medgate/medgate/posture"
)

// serveOutbound carries one app connection to the route's remote sidecar.
func (s *Server) serveOutbound(ctx context.Context, app net.Conn, r *OutboundRoute) {
	start := time.Now()
	connID := s.connSeq.Add(1)
	sessionID := newSessionID()
	log := s.log.With("route", r.Name, "direction", "outbound", "conn_id", connID, "session_id", sessionID, "peer", r.Peer)
	ev := Event{Kind: "admission", Route: r.Name, Direction: "outbound", SessionID: sessionID, PeerAddr: r.Peer, PeerID: r.PeerID.String()}
	fail := func(reason string, err error) {
		log.Warn("session not established", "reason", reason, "err", err)
		ev.Time, ev.Verdict, ev.Reasons, ev.Outcome = s.now(), "deny", []string{reason}, "not_established"
		s.events(ev)
		abort(app)
	}
	if s.active.Load() >= int64(s.cfg.MaxSessions) {
		s.m.CapacityRefuse.WithLabelValues("sessions").Inc()
		fail(reasonCapacity, nil)
		return
	}
	// The data this side sends leaves its jurisdiction: residency judges
	// it here, before anything is dialed.
	req := posture.Request{Route: r.Name, PeerID: r.PeerID, Now: s.now(), Direction: posture.Outbound}
	if local, err := s.src.GetX509SVID(); err == nil {
		req.LocalID = local.ID
	}
	egress, reason := admissible((*s.decider.Load()).Decide(req), s.canMask(r.Protocol))
	msk, mreason, merr := s.maskingFor(egress.Enforced(), r.Protocol, false)
	if reason == "" && mreason != "" {
		reason = mreason
		log.Warn("masking unavailable", "profile", egress.Profile, "err", merr)
	}
	if reason != "" {
		ev.withDecision(egress)
		if !slices.Contains(ev.Reasons, reason) {
			ev.Reasons = append([]string{reason}, ev.Reasons...)
		}
		s.m.Admissions.WithLabelValues(r.Name, "deny", reason).Inc()
		log.Warn("session not established", "reason", reason, "stage", "egress")
		ev.Time, ev.Verdict, ev.Outcome = s.now(), "deny", "not_established"
		s.events(ev)
		abort(app)
		return
	}
	s.warnDryRun(egress, r.Name, "outbound", sessionID, ev.PeerID)
	tc, err := s.dialTunnel(ctx, r, start)
	if err != nil {
		var de *dialError
		reason := "peer_unreachable"
		if errors.As(err, &de) {
			reason = de.reason
		}
		fail(reason, err)
		return
	}
	log = log.With("transport", tc.Transport())
	tc.SetDeadline(start.Add(s.cfg.ConnectTimeout + s.cfg.HandshakeTimeout))
	hello := Hello{Version: ProtocolVersion, Route: r.RemoteRoute, Session: sessionID}
	var inner *innerKeys
	if !r.DisableInnerLayer {
		kctx, cancel := context.WithDeadline(ctx, start.Add(s.cfg.ConnectTimeout+s.cfg.HandshakeTimeout))
		send, wk, err := s.newSendKey(kctx)
		cancel()
		if err != nil {
			tc.Close()
			fail(reasonKeyUnavailable, err)
			return
		}
		hello.Key = wk
		inner = &innerKeys{
			send:      send,
			sendHdr:   stream.Header{KeyID: wk.KeyID, Route: r.RemoteRoute, Jurisdiction: egress.LocalJurisdiction, PolicyVersion: egress.PolicyVersion},
			wantRoute: r.RemoteRoute, wantJurisdiction: egress.PeerJurisdiction,
		}
	}
	var token []byte
	var tokenExp time.Time
	if s.posture != nil {
		if token, tokenExp, err = s.posture(); err != nil {
			tc.Close()
			fail("posture_unavailable", err)
			return
		}
		hello.Posture = string(token)
	}
	if err := writeJSONFrame(tc, frameHello, hello); err != nil {
		tc.Close()
		fail("peer_closed", err)
		return
	}
	var admit Admit
	_, deny, err := readControl(tc, frameAdmit, &admit)
	switch {
	case err != nil:
		tc.Close()
		fail("bad_answer", err)
		return
	case deny != nil:
		tc.Close()
		s.m.Admissions.WithLabelValues(r.Name, "deny", deny.Reason).Inc()
		fail(deny.Reason, errors.New("refused by the remote sidecar"))
		return
	case admit.Session != sessionID:
		tc.Close()
		fail("bad_answer", errors.New("admit names another session"))
		return
	case inner != nil && admit.Key == nil:
		tc.Close()
		fail("bad_answer", errors.New("admit carries no data key for the inner layer"))
		return
	}
	if inner != nil {
		kctx, cancel := context.WithDeadline(ctx, start.Add(s.cfg.ConnectTimeout+s.cfg.HandshakeTimeout))
		inner.recv, err = s.unwrapPeerKey(kctx, admit.Key)
		cancel()
		if err != nil {
			writeJSONFrame(tc, frameClose, Close{Reason: reasonKeyUnavailable})
			tc.Close()
			fail(reasonKeyUnavailable, fmt.Errorf("peer data key %s: %w", admit.Key.KeyID, err))
			return
		}
	}
	tc.SetDeadline(time.Time{})
	s.m.Admissions.WithLabelValues(r.Name, admit.Verdict, "admitted").Inc()
	s.m.HandshakeTime.Observe(time.Since(start).Seconds())
	// The event records this side's decision on what it sends; the peer
	// records its own.
	ev.withDecision(egress)
	ev.Time, ev.Outcome = s.now(), "admitted"
	s.events(ev)
	s.runSession(&session{
		s: s, app: app, tun: tc, route: r.Name, direction: "outbound",
		id: sessionID, connID: connID, peerID: r.PeerID.String(), start: start,
		posture: token, postureExpires: tokenExp, inner: inner,
		protocol: r.Protocol, masking: msk,
	})
}
