package posture

import (
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Verdict is the outcome of an admission decision.
type Verdict int

const (
	// Deny is the zero value: a Decision nobody filled in denies.
	Deny Verdict = iota
	// Allow admits the peer; data crosses as it is.
	Allow
	// Deidentify admits the peer; data crosses only after the decision's
	// masking profile has been applied to it.
	Deidentify
)

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case Deidentify:
		return "deidentify"
	default:
		return "deny"
	}
}

// Reason is a short, stable code for why a decision came out as it did. It
// is a metric label, an audit field and, for denials, the only thing a
// refused peer learns. Reasons never carry policy details or PHI.
type Reason string

// Reasons shared by every admission path. The posture and residency checks
// add their own.
const (
	ReasonAllowed        Reason = "allowed"
	ReasonNoPolicy       Reason = "no_policy"
	ReasonUnknownRoute   Reason = "unknown_route"
	ReasonIDNotAllowed   Reason = "id_not_allowed"
	ReasonKeyUnavailable Reason = "key_unavailable"
	ReasonInternal       Reason = "internal_error"
)

// Request is what the sidecar knows about a peer when it decides.
type Request struct {
	// Route is the name of the inbound route the peer asked for.
	Route string
	// PeerID is the SPIFFE ID from the peer's verified X.509-SVID.
	PeerID spiffeid.ID
	// PeerSPKIHash is the SHA-256 of the peer SVID's SubjectPublicKeyInfo;
	// posture tokens must be bound to it.
	PeerSPKIHash [32]byte
	// PostureToken is the compact JWS the peer sent, or nil.
	PostureToken []byte
	// Now is the time of the decision.
	Now time.Time
}

// Decision is the answer to a Request.
type Decision struct {
	Verdict Verdict
	// Profile names the masking profile when Verdict is Deidentify.
	Profile string
	// Reasons lists every reason that contributed; for a denial, every
	// failed requirement. Never empty for a decision made by a Decider.
	Reasons []Reason
	// PolicyVersion is the version of the policy that decided.
	PolicyVersion string
	// ValidUntil is when the decision must be taken again (the posture
	// token's expiry, a legal basis's expiry). Zero means no limit.
	ValidUntil time.Time
}

// Admitted reports whether the decision lets the peer in.
func (d Decision) Admitted() bool { return d.Verdict == Allow || d.Verdict == Deidentify }

// Decider makes admission decisions. Implementations are safe for
// concurrent use.
type Decider interface {
	Decide(Request) Decision
}
