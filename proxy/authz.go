package proxy

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/medgate/medgate/posture"
)

// PostureProvider returns the device's current posture token and when it
// expires. The outbound side sends it in the hello and again, in band,
// before it expires. It is called from session goroutines.
type PostureProvider func() (token []byte, expires time.Time, err error)

// postureFrame carries a refreshed posture token.
type postureFrame struct {
	Token string `json:"token"`
}

// admission is what an inbound session was admitted on. It is judged
// again when policy changes, when the decision's validity ends (the posture
// token expires, a legal basis lapses) and when the peer's SVID expires; a
// session no longer admitted is closed.
type admission struct {
	mu           sync.Mutex
	req          posture.Request
	dec          posture.Decision
	peerNotAfter time.Time
	timer        *time.Timer
	ended        bool
}

// watch arms the admission's timer for the earliest moment it must be
// judged again. Callers hold a.mu.
func (s *Server) watch(ss *session) {
	a := ss.adm
	next := a.peerNotAfter
	if !a.dec.ValidUntil.IsZero() && (next.IsZero() || a.dec.ValidUntil.Before(next)) {
		next = a.dec.ValidUntil
	}
	if next.IsZero() {
		return
	}
	d := max(next.Sub(s.now()), 0)
	if a.timer == nil {
		a.timer = time.AfterFunc(d, func() { s.rejudge(ss, "validity_ended") })
		return
	}
	a.timer.Reset(d)
}

// rejudge decides again on a live inbound session and closes it when it
// is no longer admitted on the same terms.
func (s *Server) rejudge(ss *session, trigger string) {
	a := ss.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ended {
		return
	}
	req := a.req
	req.Now = s.now()
	var dec posture.Decision
	var reason string
	switch {
	case !a.peerNotAfter.IsZero() && !req.Now.Before(a.peerNotAfter):
		reason = "svid_expired"
		dec = posture.Decision{Verdict: posture.Deny, Reasons: []posture.Reason{"svid_expired"}}
	default:
		dec, reason = admissible((*s.decider.Load()).Decide(req), s.canMask(ss.protocol))
		switch e := dec.Enforced(); {
		case reason != "":
		case e.Verdict != a.dec.Verdict || e.Profile != a.dec.Profile:
			// Admitted on other terms (allow <-> deidentify, another
			// masking profile): the session's data path no longer fits.
			reason = "terms_changed"
		}
	}
	ev := Event{Time: s.now(), Kind: "reauthorization", Route: ss.route, Direction: "inbound", SessionID: ss.id, PeerID: ss.peerID, Outcome: trigger}
	ev.withDecision(dec)
	if reason == "" {
		s.warnDryRun(dec, ss.route, "inbound", ss.id, ss.peerID)
		a.dec = dec.Enforced()
		s.watch(ss)
		s.events(ev)
		return
	}
	a.ended = true
	if a.timer != nil {
		a.timer.Stop()
	}
	ev.Verdict = "deny"
	s.events(ev)
	s.m.Admissions.WithLabelValues(ss.route, "revoked", reason).Inc()
	s.log.Info("session no longer admitted; closing", "route", ss.route, "session_id", ss.id, "spiffe_id", ss.peerID, "trigger", trigger, "reason", reason)
	go ss.closeWithReason(reason)
}

// closeWithReason tells the peer why its session ends, then closes it.
func (ss *session) closeWithReason(reason string) {
	ss.tun.SetWriteDeadline(time.Now().Add(time.Second))
	writeJSONFrame(ss.tun, frameClose, Close{Reason: reason})
	ss.abort("revoked:" + reason)
}

// onPosture handles a refreshed token from the peer of an inbound session.
func (s *Server) onPosture(ss *session) func([]byte) error {
	return func(payload []byte) error {
		var pf postureFrame
		if err := json.Unmarshal(payload, &pf); err != nil || pf.Token == "" {
			return ErrBadFrame
		}
		ss.adm.mu.Lock()
		ss.adm.req.PostureToken = []byte(pf.Token)
		ss.adm.mu.Unlock()
		s.rejudge(ss, "posture_refreshed")
		return nil
	}
}

// rejudgeAll judges every live inbound session again, after a policy
// change.
func (s *Server) rejudgeAll(trigger string) {
	s.mu.Lock()
	live := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		if ss.adm != nil {
			live = append(live, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range live {
		s.rejudge(ss, trigger)
	}
}

// schedulePostureRefresh sends the provider's token in band whenever it
// changes, checking at two thirds of the current token's remaining life
// (from 200 ms to 5 minutes), until the returned func is called. It runs
// on a timer, so a session waiting between checks holds no goroutine.
func (s *Server) schedulePostureRefresh(ss *session, sent []byte, expires time.Time) (stop func()) {
	next := func(exp time.Time) time.Duration {
		return min(max(time.Until(exp)*2/3, 200*time.Millisecond), 5*time.Minute)
	}
	var (
		mu      sync.Mutex
		stopped bool
		t       *time.Timer
	)
	// refresh runs on the timer's goroutine, one call at a time: the timer
	// is set again only at its end.
	refresh := func() {
		mu.Lock()
		done := stopped
		mu.Unlock()
		if done {
			return
		}
		token, exp, err := s.posture()
		switch {
		case err != nil:
			s.log.Warn("posture token unavailable; not refreshed", "route", ss.route, "session_id", ss.id, "err", err)
		case string(token) == string(sent):
			expires = exp
		default:
			b, _ := json.Marshal(postureFrame{Token: string(token)})
			if err := writeFrame(ss.tun, framePosture, b); err != nil {
				return
			}
			sent, expires = token, exp
			s.log.Debug("posture refreshed in band", "route", ss.route, "session_id", ss.id, "expires", exp)
		}
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			t.Reset(next(expires))
		}
	}
	mu.Lock()
	t = time.AfterFunc(next(expires), refresh)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}
