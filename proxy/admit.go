package proxy

import (
	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/posture"
)

// AllowList is the admission used when no policy is configured: each
// inbound route admits the SPIFFE IDs its allow patterns match, with
// verdict allow, and denies everyone else. A route with no patterns admits
// nobody.
type AllowList map[string]identity.Patterns

var _ posture.Decider = AllowList(nil)

// Decide implements posture.Decider. Outbound routes are allowed: their
// configuration names the one peer they may reach.
func (a AllowList) Decide(req posture.Request) posture.Decision {
	if req.Direction == posture.Outbound {
		return posture.Decision{Verdict: posture.Allow, Reasons: []posture.Reason{posture.ReasonAllowed}, PolicyVersion: "local", Route: req.Route, Direction: req.Direction}
	}
	ps, ok := a[req.Route]
	switch {
	case !ok:
		return posture.Decision{Verdict: posture.Deny, Reasons: []posture.Reason{posture.ReasonUnknownRoute}, PolicyVersion: "local"}
	case !ps.Match(req.PeerID):
		return posture.Decision{Verdict: posture.Deny, Reasons: []posture.Reason{posture.ReasonIDNotAllowed}, PolicyVersion: "local"}
	}
	return posture.Decision{Verdict: posture.Allow, Reasons: []posture.Reason{posture.ReasonAllowed}, PolicyVersion: "local"}
}

// reasonMaskingRequired denies a session whose decision is deidentify on a
// route whose traffic this sidecar cannot mask: unmasked data never crosses.
const reasonMaskingRequired = "masking_required"

// admissible applies what the data path itself can honour to a decision:
// it fails closed on deidentify unless the route's protocol has a codec
// that can mask (canMask). A dry-run denial is admissible on the terms
// d.Enforced() gives; the decision returned keeps the verdict policy
// reached, for the access event, and the caller runs the session on
// Enforced. A decision refused here has DryRun cleared: the refusal is
// enforced.
func admissible(d posture.Decision, canMask bool) (posture.Decision, string) {
	e := d.Enforced()
	if !e.Admitted() {
		reason := string(posture.ReasonInternal)
		if len(d.Reasons) > 0 {
			reason = string(d.Reasons[0])
		}
		return d, reason
	}
	if e.Verdict == posture.Deidentify && !canMask {
		d.Verdict, d.DryRun = posture.Deny, false
		d.Reasons = append([]posture.Reason{reasonMaskingRequired}, d.Reasons...)
		return d, reasonMaskingRequired
	}
	return d, ""
}

// warnDryRun logs a denial that is not enforced because the route is in
// dry run, with the reasons policy would have refused the session for.
func (s *Server) warnDryRun(d posture.Decision, route, direction, sessionID, peerID string) {
	if !d.DryRun || d.Admitted() {
		return
	}
	s.log.Warn("dry run: policy denies, not enforced", "route", route, "direction", direction,
		"session_id", sessionID, "spiffe_id", peerID, "reasons", d.Reasons)
}
