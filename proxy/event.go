package proxy

import (
	"log/slog"
	"time"
)

// Event is an access event: one admission decision, or the end of a
// session. Events carry identities, codes and counts, never payload bytes
// or patient data.
type Event struct {
	Time          time.Time `json:"time"`
	Kind          string    `json:"kind"` // "admission" or "session_end"
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
	return slog.GroupValue(attrs...)
}
