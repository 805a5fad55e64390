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

// Decide implements posture.Decider.
func (a AllowList) Decide(req posture.Request) posture.Decision {
	ps, ok := a[req.Route]
	switch {
	case !ok:
		return posture.Decision{Verdict: posture.Deny, Reasons: []posture.Reason{posture.ReasonUnknownRoute}, PolicyVersion: "local"}
	case !ps.Match(req.PeerID):
		return posture.Decision{Verdict: posture.Deny, Reasons: []posture.Reason{posture.ReasonIDNotAllowed}, PolicyVersion: "local"}
	}
	return posture.Decision{Verdict: posture.Allow, Reasons: []posture.Reason{posture.ReasonAllowed}, PolicyVersion: "local"}
}
