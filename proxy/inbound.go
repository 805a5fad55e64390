package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"time"

	"github.com/medgate/medgate/crypto/stream"
	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/posture"
)

// Reason codes the data path adds to posture's.
const (
	reasonBadHello            = "bad_hello"
	reasonCapacity            = "capacity"
	reasonUpstreamUnavailable = "upstream_unavailable"
	reasonEvicted             = "evicted"
)

// serveInbound takes a tunnel connection through the TLS handshake, the
// hello and admission, then proxies it to the route's upstream.
func (s *Server) serveInbound(ctx context.Context, raw net.Conn, routes map[string]*InboundRoute) {
	start := time.Now()
	connID := s.connSeq.Add(1)
	elem, pc := s.pending.add(raw)
	defer s.pending.remove(elem)
	raw.SetDeadline(start.Add(s.cfg.HandshakeTimeout))
	tun, tc := newTCPTunnel(raw, func(c net.Conn) *tls.Conn { return tls.Server(c, s.serverTC) })
	ev := Event{Kind: "admission", Direction: "inbound", PeerAddr: raw.RemoteAddr().String()}

	if err := tc.HandshakeContext(ctx); err != nil {
		reason := string(identity.Classify(err))
		if pc.evicted.Load() {
			reason = reasonEvicted
			s.m.CapacityRefuse.WithLabelValues("pending_handshakes").Inc()
		}
		s.m.Handshakes.WithLabelValues("accept", reason).Inc()
		var pe *identity.PeerError
		if errors.As(err, &pe) && !pe.ID.IsZero() {
			ev.PeerID = pe.ID.String()
		}
		s.log.Info("tunnel refused in handshake", "conn_id", connID, "remote_addr", ev.PeerAddr, "spiffe_id", ev.PeerID, "reason", reason, "err", err)
		ev.Time, ev.Verdict, ev.Reasons, ev.Outcome = s.now(), "deny", []string{reason}, "handshake_refused"
		s.events(ev)
		raw.Close()
		return
	}
	s.m.Handshakes.WithLabelValues("accept", "ok").Inc()
	s.setupInbound(ctx, tun, tc.ConnectionState(), raw.RemoteAddr(), raw.LocalAddr(), connID, start, routes, func() { s.pending.remove(elem) })
}

// setupInbound reads the hello on an authenticated tunnel, decides, and
// answers admit or deny; an admitted session is proxied to the route's
// upstream until it ends. It owns tun. admitted runs once the session is
// admitted.
func (s *Server) setupInbound(ctx context.Context, tc tunnel, cs tls.ConnectionState, remote, local net.Addr, connID uint64, start time.Time, routes map[string]*InboundRoute, admitted func()) {
	ev := Event{Kind: "admission", Direction: "inbound", PeerAddr: remote.String()}
	tc.SetDeadline(start.Add(s.cfg.HandshakeTimeout))
	peerID, _ := identity.PeerID(cs)
	ev.PeerID = peerID.String()

	deny := func(reason, detail string, err error) {
		s.m.Admissions.WithLabelValues(ev.Route, "deny", reason).Inc()
		s.m.HandshakeTime.Observe(time.Since(start).Seconds())
		s.log.Info("session denied", "conn_id", connID, "route", ev.Route, "spiffe_id", ev.PeerID, "session_id", ev.SessionID, "reason", reason, "detail", detail, "err", err)
		if len(ev.Reasons) == 0 {
			ev.Reasons = []string{reason}
		} else if ev.Reasons[0] != reason && !slices.Contains(ev.Reasons, reason) {
			ev.Reasons = append([]string{reason}, ev.Reasons...)
		}
		ev.Time, ev.Verdict, ev.Outcome = s.now(), "deny", "denied"
		s.events(ev)
		writeJSONFrame(tc, frameDeny, Deny{Reason: reason})
		tc.Close()
	}

	var hello Hello
	if _, d, err := readControl(tc, frameHello, &hello); err != nil || d != nil {
		deny(reasonBadHello, "no valid hello frame", err)
		return
	}
	ev.SessionID = hello.Session
	if err := hello.validate(); err != nil {
		ev.SessionID = ""
		deny(reasonBadHello, "", err)
		return
	}
	ev.Route = hello.Route
	route, ok := routes[hello.Route]
	if !ok {
		ev.Route = "" // a peer-chosen string is not a metric label
		deny(string(posture.ReasonUnknownRoute), "", nil)
		return
	}
	req := posture.Request{Route: route.Name, PeerID: peerID, Now: s.now(), Direction: posture.Inbound}
	if hello.Posture != "" {
		req.PostureToken = []byte(hello.Posture)
	}
	if local, err := s.src.GetX509SVID(); err == nil {
		req.LocalID = local.ID
	}
	leaf := cs.PeerCertificates[0]
	req.PeerSPKIHash = identity.SPKIHash(leaf)
	dec, reason := admissible((*s.decider.Load()).Decide(req), s.canMask(route.Protocol))
	ev.withDecision(dec)
	if reason != "" {
		deny(reason, "", nil)
		return
	}
	s.warnDryRun(dec, route.Name, "inbound", hello.Session, ev.PeerID)
	dec = dec.Enforced() // the event keeps what policy decided
	if s.active.Load() >= int64(s.cfg.MaxSessions) {
		s.m.CapacityRefuse.WithLabelValues("sessions").Inc()
		deny(reasonCapacity, "session limit reached", nil)
		return
	}
	msk, reason, err := s.maskingFor(dec, route.Protocol, true)
	if reason != "" {
		deny(reason, dec.Profile, err)
		return
	}
	admit := Admit{Version: ProtocolVersion, Session: hello.Session, Verdict: dec.Verdict.String(), Profile: dec.Profile, PolicyVersion: dec.PolicyVersion}
	var inner *innerKeys
	switch {
	case hello.Key != nil:
		kctx, cancel := context.WithDeadline(ctx, start.Add(s.cfg.HandshakeTimeout))
		recv, err := s.unwrapPeerKey(kctx, hello.Key)
		if err != nil {
			cancel()
			deny(reasonKeyUnavailable, "peer data key "+hello.Key.KeyID, err)
			return
		}
		send, wk, err := s.newSendKey(kctx)
		cancel()
		if err != nil {
			deny(reasonKeyUnavailable, "own data key", err)
			return
		}
		admit.Key = wk
		inner = &innerKeys{
			send: send, recv: recv,
			sendHdr:   stream.Header{KeyID: wk.KeyID, Route: route.Name, Jurisdiction: dec.LocalJurisdiction, PolicyVersion: dec.PolicyVersion},
			wantRoute: route.Name, wantJurisdiction: dec.PeerJurisdiction,
		}
	case !route.DisableInnerLayer:
		deny(reasonInnerLayerRequired, "hello carries no data key", nil)
		return
	}
	d := net.Dialer{Timeout: s.cfg.ConnectTimeout}
	app, err := d.DialContext(ctx, "tcp", route.Upstream)
	if err != nil {
		deny(reasonUpstreamUnavailable, route.Upstream, err)
		return
	}
	if route.ProxyProtocol {
		h, err := proxyHeader(remote, local, peerID.String())
		if err == nil {
			_, err = app.Write(h)
		}
		if err != nil {
			app.Close()
			deny(reasonUpstreamUnavailable, "PROXY protocol header", err)
			return
		}
	}
	if err := writeJSONFrame(tc, frameAdmit, admit); err != nil {
		app.Close()
		tc.Close()
		return
	}
	tc.SetDeadline(time.Time{})
	s.m.Admissions.WithLabelValues(route.Name, dec.Verdict.String(), ev.Reasons[0]).Inc()
	s.m.HandshakeTime.Observe(time.Since(start).Seconds())
	ev.Time, ev.Outcome = s.now(), "admitted"
	s.events(ev)
	admitted()
	s.runSession(&session{
		s: s, app: app, tun: tc, route: route.Name, direction: "inbound",
		id: hello.Session, connID: connID, peerID: peerID.String(), start: start,
		adm: &admission{req: req, dec: dec, peerNotAfter: leaf.NotAfter}, inner: inner,
		protocol: route.Protocol, masking: msk,
	})
}
