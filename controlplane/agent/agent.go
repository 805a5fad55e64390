// Package agent is the sidecar's side of the control plane: a small xDS
// client that subscribes to the sidecar's policy set over ADS, and a
// shipper that sends the sidecar's spooled access events on an
// acknowledged stream.
//
// The xDS client subscribes with the sidecar's SPIFFE ID as node ID and the
// last version it applied; it ACKs a version only after the version
// compiled and passed the sidecar's own checks, and NACKs any other with
// the reason, keeping the policy it has. The last good set is kept on disk
// so a restarted sidecar serves it at once. While the control plane cannot
// be reached the last good policy stays in force for at most MaxAge; after
// that the sidecar refuses traffic until it is back. A sidecar that never
// had a policy refuses traffic.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/posture"
)

// Config is the agent's configuration.
type Config struct {
	// Address is the control plane's host:port, or several replicas'
	// separated by commas.
	Address string
	// ServerID admits the control plane's SPIFFE ID.
	ServerID identity.Patterns
	// CacheFile keeps the last good policy set. Required.
	CacheFile string
	// MaxAge is how long the last good policy stays in force while the
	// control plane cannot be reached (default 24h).
	MaxAge time.Duration
	// Backoff bounds the jittered wait between reconnects (default 500ms
	// to 30s).
	MinBackoff, MaxBackoff time.Duration
}

// Deps are the agent's collaborators.
type Deps struct {
	Source identity.Source
	Log    *slog.Logger
	// Check runs the sidecar's own checks on a compiled policy (masking
	// profiles it can apply, ...); an error NACKs the version.
	Check func(*posture.Policy) error
	// Apply puts a policy in force; nil means no policy: refuse traffic.
	Apply func(*posture.Policy)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Agent connects a sidecar to the control plane.
type Agent struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	conn *grpc.ClientConn
	node spiffeid.ID

	mu        sync.Mutex
	held      *posture.Policy // last good policy, in force unless stale
	version   string          // its set version, the last ACKed
	inForce   bool
	connected bool
	contact   time.Time // last time the control plane was known to serve us
	lastErr   error
}

// New checks cfg and prepares a connection; Run starts using it.
func New(cfg Config, deps Deps) (*Agent, error) {
	if cfg.Address == "" {
		return nil, errors.New("agent: no control plane address")
	}
	if len(cfg.ServerID) == 0 {
		return nil, errors.New("agent: no control plane SPIFFE ID")
	}
	if cfg.CacheFile == "" {
		return nil, errors.New("agent: no policy cache file")
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 24 * time.Hour
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if deps.Source == nil || deps.Apply == nil {
		return nil, errors.New("agent: Source and Apply are required")
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	svid, err := deps.Source.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("agent: no SVID: %w", err)
	}
	conn, err := Dial(cfg.Address, deps.Source, identity.AllowPatterns(cfg.ServerID))
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, deps: deps, log: deps.Log, conn: conn, node: svid.ID}
	a.loadCache()
	return a, nil
}

// Dial opens a gRPC client connection to a control plane over SPIFFE mTLS:
// TLS 1.3, the SVID from src, and a server admitted by authorize. address
// is one host:port, or several separated by commas: replicas sharing a
// store, tried in order, the next one taking over when the one in use
// fails.
func Dial(address string, src identity.Source, authorize identity.Authorizer) (*grpc.ClientConn, error) {
	var addrs []resolver.Address
	for _, a := range strings.Split(address, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, resolver.Address{Addr: a})
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("agent: no control plane address")
	}
	r := manual.NewBuilderWithScheme("medgate-cp")
	r.InitialState(resolver.State{Addresses: addrs})
	return grpc.NewClient(r.Scheme()+":///control-plane",
		grpc.WithResolvers(r),
		grpc.WithAuthority(addrs[0].Addr),
		grpc.WithTransportCredentials(credentials.NewTLS(identity.GRPCClientConfig(src, authorize))),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	)
}

// Conn is the connection to the control plane, shared with the event
// shipper.
func (a *Agent) Conn() *grpc.ClientConn { return a.conn }

// Close closes the connection.
func (a *Agent) Close() error { return a.conn.Close() }

// Ready reports whether a policy is in force.
func (a *Agent) Ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.inForce:
		return nil
	case a.held == nil:
		if a.lastErr != nil {
			return fmt.Errorf("no policy received from the control plane yet: %w", a.lastErr)
		}
		return errors.New("no policy received from the control plane yet")
	default:
		return fmt.Errorf("control plane unreachable since %s, longer than MEDGATE_POLICY_MAX_AGE (%s): policy expired",
			a.contact.UTC().Format(time.RFC3339), a.cfg.MaxAge)
	}
}

// Version is the version of the policy set in force, or "".
func (a *Agent) Version() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.inForce {
		return ""
	}
	return a.version
}

// Run subscribes until ctx ends, reconnecting with jittered backoff, and
// withdraws the policy when the control plane has been out of reach for
// longer than MaxAge.
func (a *Agent) Run(ctx context.Context) error {
	go a.expire(ctx)
	backoff := a.cfg.MinBackoff
	for {
		start := a.deps.Now()
		err := a.subscribe(ctx)
		if ctx.Err() != nil {
			return nil
		}
		a.mu.Lock()
		a.connected = false
		a.lastErr = err
		a.mu.Unlock()
		if a.deps.Now().Sub(start) > time.Minute {
			backoff = a.cfg.MinBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		a.log.Warn("control plane stream ended; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, a.cfg.MaxBackoff)
	}
}

// expire withdraws a stale policy.
func (a *Agent) expire(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.mu.Lock()
		stale := a.inForce && !a.connected && a.deps.Now().Sub(a.contact) > a.cfg.MaxAge
		if stale {
			a.inForce = false
		}
		a.mu.Unlock()
		if stale {
			a.log.Error("control plane out of reach for longer than the policy's maximum age; refusing traffic until it is back",
				"since", a.contact.UTC().Format(time.RFC3339), "max_age", a.cfg.MaxAge)
			a.deps.Apply(nil)
		}
	}
}

// confirm records that the control plane serves us now, and puts the held
// policy back in force if it had expired.
func (a *Agent) confirm() {
	a.mu.Lock()
	a.connected = true
	a.contact = a.deps.Now()
	a.lastErr = nil
	restore := !a.inForce && a.held != nil
	if restore {
		a.inForce = true
	}
	p := a.held
	a.mu.Unlock()
	a.touchCache()
	if restore {
		a.log.Info("control plane reached; policy in force again", "policy_version", p.Version)
		a.deps.Apply(p)
	}
}
