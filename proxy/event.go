package proxy

import (
	"log/slog"
	"strings"
	"time"

	"github.com/medgate/medgate/posture"
	"github.com/medgate/medgate/proxy/mask"
)

// Event is an access event: one admission decision, or the end of a
// session. Events carry identities, codes and counts, never payload bytes
// or patient data.
type Event struct {
	Time          time.Time `json:"time"`
	Kind          string    `json:"kind"` // "admission", "reauthorization", "object" or "session_end"
	Route         string    `json:"route"`
	Direction     string    `json:"direction"` // "inbound" or "outbound"
	SessionID     string    `json:"session_id,omitempty"`
	LocalID       string    `json:"local_id,omitempty"`
	PeerID        string    `json:"peer_id,omitempty"`
	PeerAddr      string    `json:"peer_addr,omitempty"`
	Verdict       string    `json:"verdict,omitempty"`
	Reasons       []string  `json:"reasons,omitempty"`
	Profile       string    `json:"profile,omitempty"`
	PolicyVersion string    `json:"policy_version,omitempty"`
	BytesToPeer   int64     `json:"bytes_to_peer,omitempty"`
	BytesFromPeer int64     `json:"bytes_from_peer,omitempty"`
	DurationMS    int64     `json:"duration_ms,omitempty"`
	Outcome       string    `json:"outcome,omitempty"`
	// DryRun is set when the route is in dry run: Verdict and Reasons are
	// what policy decided, and a deny verdict was not enforced (Outcome
	// says what happened).
	DryRun bool `json:"dry_run,omitempty"`

	// From the admission decision, when there was one.
	DataClass         string `json:"data_class,omitempty"`
	LocalJurisdiction string `json:"local_jurisdiction,omitempty"`
	PeerJurisdiction  string `json:"peer_jurisdiction,omitempty"`
	LegalBasis        string `json:"legal_basis,omitempty"`
	DeviceID          string `json:"device_id,omitempty"`
	DeviceOS          string `json:"device_os,omitempty"`

	// Object is what crossed a masked session (kind "object").
	Object *mask.Object `json:"object,omitempty"`
}

// withDecision copies what an access event records of a decision.
func (e *Event) withDecision(d posture.Decision) {
	e.Verdict = d.Verdict.String()
	e.DryRun = d.DryRun
	e.Profile = d.Profile
	e.PolicyVersion = d.PolicyVersion
	e.Reasons = e.Reasons[:0]
	for _, r := range d.Reasons {
		e.Reasons = append(e.Reasons, string(r))
	}
	e.DataClass = d.DataClass
	e.LocalJurisdiction = d.LocalJurisdiction
	e.PeerJurisdiction = d.PeerJurisdiction
	if !d.LegalBasis.IsZero() {
		e.LegalBasis = d.LegalBasis.Type
		if d.LegalBasis.Reference != "" {
			e.LegalBasis += ":" + d.LegalBasis.Reference
		}
	}
	e.DeviceID = d.Posture.DeviceID
	if d.Posture.OSName != "" {
		e.DeviceOS = strings.TrimSpace(d.Posture.OSName + " " + d.Posture.OSVersion)
	}
}

// EventSink receives access events. It must not block for long: it runs on
// the data path. Implementations are safe for concurrent use.
type EventSink func(Event)

// LogValue renders the event for slog.
func (e Event) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("kind", e.Kind),
		slog.String("route", e.Route),
		slog.String("direction", e.Direction),
	}
	add := func(k, v string) {
		if v != "" {
			attrs = append(attrs, slog.String(k, v))
		}
	}
	add("session_id", e.SessionID)
	add("spiffe_id", e.PeerID)
	add("verdict", e.Verdict)
	if len(e.Reasons) > 0 {
		attrs = append(attrs, slog.Any("reasons", e.Reasons))
	}
	add("profile", e.Profile)
	add("policy_version", e.PolicyVersion)
	add("outcome", e.Outcome)
	if e.DryRun {
		attrs = append(attrs, slog.Bool("dry_run", true))
	}
	if o := e.Object; o != nil {
		attrs = append(attrs, slog.Group("object", "protocol", o.Protocol, "operation", o.Operation, "profile", o.Profile, "sha256", o.SHA256))
	}
	return slog.GroupValue(attrs...)
}
