package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/peer"

	"github.com/medgate/medgate/controlplane/store"
	"github.com/medgate/medgate/identity"
)

// Refusals are access events too. The control plane records the calls it
// turns away in the audit store, beside the sidecars' events, so the audit
// trail shows an identity that tried to change policy, subscribe under
// another node's ID or send events without being allowed to.
//
// Each process records under a source of its own, "control-plane/REPLICA/
// START", with sequence numbers from 1, so replicas and restarts never
// reuse one. At most refusalBurst refusals a minute are recorded one by
// one; beyond that they are counted, and the count goes into the store as
// one event when the minute is over, so a flood of refused calls cannot
// flood the store.
const (
	refusalBurst  = 60
	refusalWindow = time.Minute
	// refusalStoreTimeout bounds how long a refused call waits for its
	// event to be stored.
	refusalStoreTimeout = 5 * time.Second
)

// refusal is the record of one refused call, or of refusals counted
// together. Its fields are the sidecars' access event fields, so the same
// queries find both.
type refusal struct {
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"`  // "control_plane"
	Route    string    `json:"route"` // the API: ads, events or admin, or tls for the handshake
	PeerID   string    `json:"peer_id,omitempty"`
	PeerAddr string    `json:"peer_addr,omitempty"`
	Verdict  string    `json:"verdict"` // "deny"
	Reasons  []string  `json:"reasons"`
	Outcome  string    `json:"outcome"` // "refused"
	Replica  string    `json:"replica"`
	// Count is how many refused calls the event stands for when more than
	// one: those over the limit in a minute.
	Count int `json:"count,omitempty"`
}

// refusalLog numbers and stores refusals.
type refusalLog struct {
	source string

	// appendMu keeps appends in sequence order: the store takes a
	// source's events in order.
	appendMu sync.Mutex
	seq      uint64 // last stored, under appendMu

	mu          sync.Mutex
	windowStart time.Time
	inWindow    int
	unrecorded  map[string]int // by API, over the limit in this window
}

func newRefusalLog(replica string, now time.Time) *refusalLog {
	var b [4]byte
	rand.Read(b[:])
	name := "control-plane/"
	if replica != "" {
		name += replica + "/"
	}
	return &refusalLog{
		source:     name + now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:]),
		unrecorded: map[string]int{},
	}
}

// refuse logs, counts and records a refused call to api by caller (zero
// when the call had no SPIFFE ID) from addr, and returns err.
func (s *Server) refuse(ctx context.Context, api string, caller spiffeid.ID, addr, reason string, err error) error {
	s.m.refused.WithLabelValues(api).Inc()
	r := refusal{Kind: "control_plane", Route: api, PeerAddr: addr, Verdict: "deny", Reasons: []string{reason}, Outcome: "refused"}
	if !caller.IsZero() {
		r.PeerID = caller.String()
	}
	s.log.Warn("call refused", "api", api, "peer_id", r.PeerID, "peer_addr", addr, "reason", reason, "err", err)
	s.record(ctx, r)
	return err
}

// RecordHandshakeRefusals returns base, for the control plane's gRPC
// server, with its certificate check wrapped: a client whose certificate
// it refuses (another trust domain, an expired SVID, an ID that is neither
// an admin nor a sidecar) is recorded as a refusal of api "tls", with the
// client's address and, when the certificate carried one, its SPIFFE ID.
// A client that sends no certificate at all fails inside crypto/tls,
// before the check, and is not recorded.
func (s *Server) RecordHandshakeRefusals(base *tls.Config) *tls.Config {
	if base.VerifyConnection == nil {
		return base // nothing checks the certificate's identity here
	}
	out := base.Clone()
	out.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		addr := ""
		if hello.Conn != nil {
			addr = hello.Conn.RemoteAddr().String()
		}
		verify := c.VerifyConnection
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			err := verify(cs)
			if err != nil {
				var caller spiffeid.ID
				var pe *identity.PeerError
				if errors.As(err, &pe) {
					caller = pe.ID
				}
				s.refuse(context.Background(), "tls", caller, addr, string(identity.Classify(err)), err)
			}
			return err
		}
		return c, nil
	}
	return out
}

// peerAddr is the address of the gRPC call's peer, or "".
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// admit returns the caller's ID when it matches ps, and otherwise refuses
// the call to api.
func (s *Server) admit(ctx context.Context, ps identity.Patterns, api, what string) (spiffeid.ID, error) {
	id, err := authorize(ctx, ps, what)
	if err == nil {
		return id, nil
	}
	reason := "not_allowed"
	if id.IsZero() {
		reason = "no_spiffe_id"
	}
	return id, s.refuse(ctx, api, id, peerAddr(ctx), reason, err)
}

// record stores r under the next sequence number, or counts it when the
// minute's limit is reached. It waits for the store at most
// refusalStoreTimeout; a refusal it cannot store is logged and counted.
func (s *Server) record(ctx context.Context, r refusal) {
	l := s.refusals
	now := s.now()
	l.mu.Lock()
	pending := l.rollLocked(now)
	if l.inWindow >= refusalBurst {
		l.unrecorded[r.Route]++
		l.mu.Unlock()
		s.m.refusalsCounted.Inc()
		s.storeRefusals(ctx, pending)
		return
	}
	l.inWindow++
	r.Time = now.UTC()
	l.mu.Unlock()
	s.storeRefusals(ctx, append(pending, r))
}

// flushRefusals stores the counts of the window that has ended, if any.
func (s *Server) flushRefusals(ctx context.Context) {
	l := s.refusals
	l.mu.Lock()
	pending := l.rollLocked(s.now())
	l.mu.Unlock()
	s.storeRefusals(ctx, pending)
}

// rollLocked starts a new window when the current one is over and returns
// the events that count the refusals over the limit in the old one.
func (l *refusalLog) rollLocked(now time.Time) []refusal {
	if now.Sub(l.windowStart) < refusalWindow {
		return nil
	}
	var out []refusal
	for api, n := range l.unrecorded {
		out = append(out, refusal{Time: now.UTC(), Kind: "control_plane", Route: api, Verdict: "deny", Reasons: []string{"over_record_limit"}, Outcome: "refused", Count: n})
	}
	clear(l.unrecorded)
	l.windowStart, l.inWindow = now, 0
	return out
}

func (s *Server) storeRefusals(ctx context.Context, rs []refusal) {
	if len(rs) == 0 {
		return
	}
	l := s.refusals
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	evs := make([]store.Event, len(rs))
	for i := range rs {
		rs[i].Replica = s.cfg.Replica
		rec, _ := json.Marshal(rs[i]) // plain strings and numbers: cannot fail
		l.seq++
		evs[i] = store.Event{Source: l.source, Seq: l.seq, Record: rec}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refusalStoreTimeout)
	defer cancel()
	if err := s.store.Append(ctx, evs); err != nil {
		s.m.refusalsUnstored.Add(float64(len(evs)))
		s.log.Error("storing the access events of refused calls", "source", l.source, "events", len(evs), "err", err)
	}
}
