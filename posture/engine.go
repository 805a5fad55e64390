package posture

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Defaults for Config.
const (
	DefaultCacheSize   = 4096
	DefaultMaxCacheAge = 5 * time.Minute
)

// Config tunes an Engine. The zero value is ready to use.
type Config struct {
	// CacheSize is how many admitted decisions the engine remembers. Zero
	// means DefaultCacheSize; a negative size turns the cache off.
	CacheSize int
	// MaxCacheAge bounds how long a decision is reused when nothing in it
	// expires sooner. Zero means DefaultMaxCacheAge.
	MaxCacheAge time.Duration
}

// Deps holds an Engine's collaborators.
type Deps struct {
	// Clock gives the decision time for requests whose Now is zero; nil
	// means time.Now.
	Clock func() time.Time
}

// Engine decides admissions against the policy it holds, which the
// sidecar swaps atomically with SetPolicy. Until it has one, every
// decision denies with ReasonNoPolicy. An Engine is safe for concurrent
// use.
//
// Admitted decisions are cached, keyed by the token's SHA-256, the
// policy's content hash, the direction, route, peer and local IDs and the
// peer's SVID key hash, so a different token, key, identity or policy
// never reuses a decision. An entry lives until the decision's ValidUntil
// or MaxCacheAge, whichever comes first, and is never used for a request
// whose time lies outside that window. Denials are not cached, nor are
// decisions on a route whose when condition reads now: the condition is
// evaluated afresh for every such request. (A condition that does not
// read now depends only on what the cache key holds.)
type Engine struct {
	policy atomic.Pointer[Policy]
	cache  *lru.Cache[cacheKey, cacheEntry]
	maxAge time.Duration
	clock  func() time.Time

	hits, misses atomic.Uint64
}

var _ Decider = (*Engine)(nil)

type cacheKey struct {
	token  [32]byte
	policy [32]byte
	spki   [32]byte
	dir    Direction
	route  string
	peer   string
	local  string
}

type cacheEntry struct {
	d         Decision
	from, end time.Time
}

// NewEngine returns an Engine without a policy.
func NewEngine(cfg Config, deps Deps) (*Engine, error) {
	e := &Engine{maxAge: cfg.MaxCacheAge, clock: deps.Clock}
	if e.maxAge == 0 {
		e.maxAge = DefaultMaxCacheAge
	}
	if e.maxAge < 0 {
		return nil, errors.New("posture: engine: negative MaxCacheAge")
	}
	if e.clock == nil {
		e.clock = time.Now
	}
	size := cfg.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	if size > 0 {
		c, err := lru.New[cacheKey, cacheEntry](size)
		if err != nil {
			return nil, fmt.Errorf("posture: engine: %w", err)
		}
		e.cache = c
	}
	return e, nil
}

// SetPolicy makes p the policy for every later decision; nil removes the
// policy, so every decision denies with ReasonNoPolicy. Decisions made
// before the swap are not withdrawn: the caller judges live connections
// again after a change.
func (e *Engine) SetPolicy(p *Policy) {
	old := e.policy.Swap(p)
	if e.cache != nil && old != nil && (p == nil || old.digest != p.digest) {
		e.cache.Purge()
	}
}

// Policy returns the current policy, or nil.
func (e *Engine) Policy() *Policy { return e.policy.Load() }

// CacheStats counts decision cache lookups.
type CacheStats struct {
	Hits, Misses uint64
}

// CacheStats returns the cache counters since the engine was made.
func (e *Engine) CacheStats() CacheStats {
	return CacheStats{Hits: e.hits.Load(), Misses: e.misses.Load()}
}

// Decide judges req. For an Inbound request it checks, in order: a policy
// is loaded, the route exists, the peer's ID is allowed on it (each of
// these ends the decision when it fails); then, all reported together: the
// peer's and the local jurisdiction are mapped by policy, the posture
// token when the route names a profile (Verify, then every requirement of
// the profile), the route's when condition, and the residency rule for
// the route's data class from the local to the peer's jurisdiction: data
// leaving this sidecar toward the peer.
//
// On a dry-run route a peer the allow list does not name is judged on
// everything else too, so that the decision says how its session would be
// masked; the decision has DryRun set and Enforced admits.
//
// An Outbound request (this sidecar connecting out on one of its outbound
// routes, PeerID the accepting sidecar's ID) is judged the same way with
// no posture token: it rules on the data this sidecar sends.
//
// ValidUntil is the earliest of the token's expiry, the moment a time
// bound requirement (token age, EDR heartbeat, patch age) stops holding,
// the legal basis's expiry and, when the route's condition reads now,
// ConditionRecheck from now.
func (e *Engine) Decide(req Request) Decision {
	now := req.Now
	if now.IsZero() {
		now = e.clock()
	}
	d := Decision{Route: req.Route, Direction: req.Direction}
	p := e.policy.Load()
	if p == nil {
		return deny(d, ReasonNoPolicy)
	}
	d.PolicyVersion = p.Version
	route, ok := p.Route(req.Direction, req.Route)
	if !ok {
		return deny(d, ReasonUnknownRoute)
	}
	d.DataClass = route.DataClass
	d.DryRun = route.DryRun
	allowed := route.Allows(req.PeerID)
	if !allowed && !route.DryRun {
		return deny(d, ReasonIDNotAllowed)
	}
	// A condition that reads the clock gives another answer later for the
	// same request: such decisions are not cached.
	cacheable := e.cache != nil && (route.cond == nil || !route.cond.readsNow)
	var key cacheKey
	if cacheable {
		key = cacheKey{
			policy: p.digest,
			dir:    req.Direction,
			route:  req.Route,
			peer:   req.PeerID.String(),
			local:  req.LocalID.String(),
		}
		if route.Profile != "" && req.Direction == Inbound {
			key.spki = req.PeerSPKIHash
			if len(req.PostureToken) > 0 {
				key.token = sha256.Sum256(req.PostureToken)
			}
		}
		if ent, ok := e.cache.Get(key); ok {
			if !now.Before(ent.from) && now.Before(ent.end) {
				e.hits.Add(1)
				ent.d.Reasons = slices.Clone(ent.d.Reasons)
				return ent.d
			}
			e.cache.Remove(key)
		}
		e.misses.Add(1)
	}
	d = decide(p, route, req, now, d, allowed)
	if cacheable && d.Admitted() {
		end := now.Add(e.maxAge)
		if !d.ValidUntil.IsZero() && d.ValidUntil.Before(end) {
			end = d.ValidUntil
		}
		if now.Before(end) {
			e.cache.Add(key, cacheEntry{d: d, from: now, end: end})
			d.Reasons = slices.Clone(d.Reasons)
		}
	}
	return d
}

func deny(d Decision, r ...Reason) Decision {
	d.Verdict = Deny
	d.Reasons = r
	return d
}

func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	default:
		return b
	}
}

// decide is Decide without the cache. allowed says whether the route's
// allow list names the peer; only a dry-run route decides further when it
// does not, so the decision still says how the session would be masked.
func decide(p *Policy, route *Route, req Request, now time.Time, d Decision, allowed bool) Decision {
	var reasons []Reason
	add := func(rs ...Reason) {
		for _, r := range rs {
			if !slices.Contains(reasons, r) {
				reasons = append(reasons, r)
			}
		}
	}
	if !allowed {
		add(ReasonIDNotAllowed)
	}
	local, okLocal := p.Jurisdiction(req.LocalID)
	peer, okPeer := p.Jurisdiction(req.PeerID)
	d.LocalJurisdiction, d.PeerJurisdiction = local, peer
	if !okPeer {
		add(ReasonJurisdictionUnmapped)
	}
	if !okLocal {
		add(ReasonLocalJurisdictionUnmapped)
	}

	var validUntil time.Time
	var device *Claims // claims of a token that verified, for the condition
	if req.Direction == Inbound && route.Profile != "" {
		prof, ok := p.Profile(route.Profile)
		switch {
		case !ok || prof.trusted == nil:
			add(ReasonInternal)
		case len(req.PostureToken) == 0:
			add(ReasonTokenMissing)
		default:
			claims, err := Verify(req.PostureToken, prof.trusted, req.PeerID, req.PeerSPKIHash, now)
			if claims != nil {
				d.Posture = claims.Summary()
			}
			var te *TokenError
			switch {
			case errors.As(err, &te):
				add(te.Reasons...)
			case err != nil:
				add(ReasonInternal)
			default:
				device = claims
				rs, until := prof.Check(claims, now)
				add(rs...)
				validUntil = earliest(claims.Expiry, until)
			}
		}
	}

	if c := route.cond; c != nil {
		in := conditionInput{
			peer: req.PeerID, local: req.LocalID, peerJur: peer, localJur: local,
			route: route, claims: device, now: now,
		}
		switch ok, err := c.eval(&in); {
		case err != nil:
			add(ReasonConditionError)
		case !ok:
			add(ReasonConditionFalse)
		}
		if c.readsNow {
			validUntil = earliest(validUntil, now.Add(ConditionRecheck))
		}
	}

	verdict := Deny
	if okLocal && okPeer {
		rule, lapsed := p.Transfer(route.DataClass, local, peer, now)
		if lapsed != nil {
			add(ReasonLegalBasisExpired)
		}
		switch {
		case rule == nil:
			add(ReasonNoTransferRule)
			if lapsed != nil {
				d.LegalBasis = lapsed.LegalBasis
			}
		case rule.Action == ActionDeny:
			add(ReasonTransferDenied)
		case rule.Action == ActionDeidentify:
			verdict = Deidentify
			d.Profile = rule.MaskingProfile
			d.LegalBasis = rule.LegalBasis
			validUntil = earliest(validUntil, rule.LegalBasis.Expires)
		default:
			verdict = Allow
			d.LegalBasis = rule.LegalBasis
			validUntil = earliest(validUntil, rule.LegalBasis.Expires)
		}
	}

	if slices.ContainsFunc(reasons, func(r Reason) bool { return r != ReasonLegalBasisExpired }) {
		if route.DryRun {
			// Not enforced: the session runs on the terms residency set,
			// masked if it said so (see Decision.Enforced), for as long
			// as they hold.
			d.ValidUntil = validUntil
			return deny(d, reasons...)
		}
		d.Profile = ""
		if verdict != Deny {
			// Residency admitted but something else denied: the rule's
			// basis decided nothing. An expired basis that left no rule
			// stays, since it explains the denial.
			d.LegalBasis = LegalBasis{}
		}
		return deny(d, reasons...)
	}
	switch verdict {
	case Deidentify:
		add(ReasonDeidentified)
	default:
		add(ReasonAllowed)
	}
	d.Verdict = verdict
	d.Reasons = reasons
	d.ValidUntil = validUntil
	return d
}
