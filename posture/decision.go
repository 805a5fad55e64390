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

// Reasons from the posture token and the route's posture profile. Every
// failed requirement adds its own reason.
const (
	// ReasonTokenMissing: the route requires posture and the peer sent no token.
	ReasonTokenMissing Reason = "token_missing"
	// ReasonTokenMalformed: not a compact JWS, too large, an algorithm other
	// than ES256 or EdDSA, a wrong "typ", or claims that do not decode.
	ReasonTokenMalformed Reason = "token_malformed"
	// ReasonTokenUnknownSigner: no trusted issuer holds the token's key, or
	// the key belongs to an issuer other than the token's "iss".
	ReasonTokenUnknownSigner Reason = "token_unknown_signer"
	// ReasonTokenBadSignature: the signature does not verify under the key
	// the token names.
	ReasonTokenBadSignature Reason = "token_bad_signature"
	// ReasonTokenExpired: "exp" is not after the decision time.
	ReasonTokenExpired Reason = "token_expired"
	// ReasonTokenNotYetValid: "iat" lies in the future beyond the allowed
	// clock skew.
	ReasonTokenNotYetValid Reason = "token_not_yet_valid"
	// ReasonTokenTooOld: the token was issued longer ago than the profile's
	// maximum token age.
	ReasonTokenTooOld Reason = "token_too_old"
	// ReasonTokenWrongSubject: "sub" names another SPIFFE ID than the
	// peer's: a token replayed by another identity.
	ReasonTokenWrongSubject Reason = "token_wrong_subject"
	// ReasonTokenWrongSVID: the "cnf" binding names another SVID key than the
	// one the peer presented in the handshake.
	ReasonTokenWrongSVID Reason = "token_wrong_svid"
	// ReasonClaimMissing: a claim the token format or the profile requires
	// is absent.
	ReasonClaimMissing Reason = "claim_missing"
	// ReasonOSUnsupported: the profile sets minimum versions and names no
	// minimum for the device's OS.
	ReasonOSUnsupported Reason = "os_unsupported"
	// ReasonOSTooOld: the OS version is below the profile's minimum.
	ReasonOSTooOld Reason = "os_too_old"
	// ReasonDiskNotEncrypted: disk encryption is required and absent.
	ReasonDiskNotEncrypted Reason = "disk_not_encrypted"
	// ReasonEDRNotRunning: an EDR agent is required and is not running, or
	// is not one the profile names.
	ReasonEDRNotRunning Reason = "edr_not_running"
	// ReasonEDRStale: the EDR agent's last heartbeat is older than allowed.
	ReasonEDRStale Reason = "edr_stale"
	// ReasonFirewallOff: a firewall is required and absent.
	ReasonFirewallOff Reason = "firewall_off"
	// ReasonScreenLockOff: a screen lock is required and absent.
	ReasonScreenLockOff Reason = "screen_lock_off"
	// ReasonPatchTooOld: the last patch is older than allowed.
	ReasonPatchTooOld Reason = "patch_too_old"
)

// Reasons from jurisdictions and residency rules.
const (
	// ReasonJurisdictionUnmapped: no binding maps the peer's SPIFFE ID to a
	// jurisdiction.
	ReasonJurisdictionUnmapped Reason = "jurisdiction_unmapped"
	// ReasonLocalJurisdictionUnmapped: no binding maps this sidecar's own
	// SPIFFE ID (Request.LocalID) to a jurisdiction.
	ReasonLocalJurisdictionUnmapped Reason = "local_jurisdiction_unmapped"
	// ReasonNoTransferRule: no residency rule covers the data class from the
	// local to the peer's jurisdiction.
	ReasonNoTransferRule Reason = "no_transfer_rule"
	// ReasonTransferDenied: the residency rule that applies denies.
	ReasonTransferDenied Reason = "transfer_denied"
	// ReasonLegalBasisExpired: a rule that would have applied names a legal
	// basis past its expiry, so it no longer allows. It accompanies the
	// outcome of the next rule that applies, or no_transfer_rule.
	ReasonLegalBasisExpired Reason = "legal_basis_expired"
	// ReasonDeidentified: admitted, and data crosses only de-identified.
	ReasonDeidentified Reason = "deidentified"
)

// Reasons from a route's when condition.
const (
	// ReasonConditionFalse: the route's when expression evaluated to false.
	ReasonConditionFalse Reason = "condition_false"
	// ReasonConditionError: the route's when expression failed to evaluate
	// (a runtime error such as a failed conversion, or the cost limit).
	ReasonConditionError Reason = "condition_error"
)

// Direction says which way a decision looks at a connection.
type Direction int

const (
	// Inbound is the zero value: a peer connected to one of this sidecar's
	// inbound routes. Its posture token is checked, and residency judges
	// data leaving this sidecar toward the peer (query and retrieve results).
	Inbound Direction = iota
	// Outbound: this sidecar connects out on one of its outbound routes to
	// the peer (the accepting sidecar). Residency judges data this sidecar
	// sends (a push). There is no posture token to check.
	Outbound
)

func (d Direction) String() string {
	if d == Outbound {
		return "outbound"
	}
	return "inbound"
}

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
	// Now is the time of the decision. Zero means the decider's clock.
	Now time.Time
	// Direction says whether Route is an inbound route the peer connected
	// to (the zero value) or an outbound route this sidecar connects on.
	Direction Direction
	// LocalID is this sidecar's own SPIFFE ID. Policy maps it to the local
	// jurisdiction, the one the data is in; a zero LocalID maps nowhere and
	// residency then denies.
	LocalID spiffeid.ID
}

// Decision is the answer to a Request.
type Decision struct {
	Verdict Verdict
	// Profile names the masking profile when Verdict is Deidentify, and,
	// on a dry-run denial, the one the residency rule chose, if it chose
	// de-identification (see Enforced).
	Profile string
	// Reasons lists every reason that contributed; for a denial, every
	// failed requirement. Never empty for a decision made by a Decider.
	Reasons []Reason
	// PolicyVersion is the version of the policy that decided.
	PolicyVersion string
	// ValidUntil is when the decision must be taken again (the posture
	// token's expiry, a legal basis's expiry). Zero means no limit.
	// Engine also counts the moment a time-bound requirement stops
	// holding (token age, EDR heartbeat age, patch age).
	ValidUntil time.Time

	// Route and Direction echo the request.
	Route     string
	Direction Direction
	// DataClass is the route's data class, empty when the route is unknown.
	DataClass string
	// LocalJurisdiction and PeerJurisdiction are the codes policy binds to
	// the two identities; empty when unmapped or not reached.
	LocalJurisdiction string
	PeerJurisdiction  string
	// LegalBasis is the legal basis of the residency rule that admitted;
	// its Type is empty when the rule names none. On a denial it is set
	// only when an expired basis left no rule (ReasonLegalBasisExpired with
	// ReasonNoTransferRule), and is then that expired basis.
	LegalBasis LegalBasis
	// Posture summarizes the device from a token whose signature verified,
	// for the access event; zero when there was none.
	Posture PostureSummary
	// DryRun is set when the route is in dry run: Verdict and Reasons are
	// what policy decided and what an access event records, but a denial
	// is not enforced. Enforced gives the terms the session runs on.
	DryRun bool
}

// PostureSummary is the part of a posture token an access event records.
// It holds no PHI.
type PostureSummary struct {
	Issuer    string `json:"issuer,omitempty"`
	DeviceID  string `json:"device_id,omitempty"`
	OSName    string `json:"os_name,omitempty"`
	OSVersion string `json:"os_version,omitempty"`
}

// Admitted reports whether the decision lets the peer in.
func (d Decision) Admitted() bool { return d.Verdict == Allow || d.Verdict == Deidentify }

// Enforced returns the decision the data path applies. It is d, except
// for a dry-run denial, which admits: with Verdict Deidentify when Profile
// names the masking profile the residency rule chose, Allow otherwise.
// A dry run therefore never lets data cross unmasked where residency
// called for masking; it does let data cross where residency itself
// denies. Reasons, DryRun and the rest are kept.
func (d Decision) Enforced() Decision {
	if !d.DryRun || d.Admitted() {
		return d
	}
	d.Verdict = Allow
	if d.Profile != "" {
		d.Verdict = Deidentify
	}
	return d
}

// Has reports whether r is among the decision's reasons.
func (d Decision) Has(r Reason) bool {
	for _, x := range d.Reasons {
		if x == r {
			return true
		}
	}
	return false
}

// Decider makes admission decisions. Implementations are safe for
// concurrent use.
type Decider interface {
	Decide(Request) Decision
}

// MarshalText returns "inbound" or "outbound".
func (d Direction) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// MarshalText returns "allow", "deidentify" or "deny".
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }
