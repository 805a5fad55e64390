package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medgate/medgate/controlplane/agent"
	"github.com/medgate/medgate/controlplane/spool"
	"github.com/medgate/medgate/crypto/keys"
	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/posture"
	"github.com/medgate/medgate/proxy"
)

// reasonAuditUnavailable refuses a session whose access events could not
// be kept: the spool is full and the route fails closed.
const reasonAuditUnavailable posture.Reason = "audit_unavailable"

// spoolHeadroom is the room an admission needs in the spool: the events of
// one session.
const spoolHeadroom = 64 << 10

// controlPlaneLink is the sidecar's side of the control plane: the policy
// subscription and the access event spool and shipper.
type controlPlaneLink struct {
	agent   *agent.Agent
	spool   *spool.Spool
	shipper *agent.Shipper
	// mode is the default when the spool is full; modes holds the
	// routes' own, by spoolKey.
	mode    spool.FullMode
	modes   map[string]spool.FullMode
	max     int64
	log     *slog.Logger
	lost    prometheus.Counter
	pending prometheus.GaugeFunc
	// reevaluate judges live sessions again after a policy change; set
	// once the proxy exists.
	reevaluate atomic.Pointer[func()]
}

func parseFullMode(s string) (spool.FullMode, error) {
	switch s {
	case "fail-closed", "":
		return spool.FailClosed, nil
	case "drop-oldest":
		return spool.DropOldest, nil
	}
	return 0, fmt.Errorf("%q: want fail-closed or drop-oldest", s)
}

// linkConfig is what a controlPlaneLink needs to know.
type linkConfig struct {
	address  string
	serverID identity.Patterns
	stateDir string
	maxAge   time.Duration
	// spoolBytes bounds the spool; mode is what a full spool does, modes
	// the routes' own choices (by spoolKey).
	spoolBytes int64
	mode       spool.FullMode
	modes      map[string]spool.FullMode
}

// sidecarLinkConfig is the link configuration from the sidecar's settings.
func sidecarLinkConfig(cfg *sidecarConfig) linkConfig {
	mode, _ := parseFullMode(cfg.env.EventSpoolFull)
	return linkConfig{
		address: cfg.env.ControlPlane, serverID: cfg.controlPlaneID,
		stateDir: cfg.env.StateDir, maxAge: cfg.env.PolicyMaxAge,
		spoolBytes: int64(cfg.env.EventSpoolMB) << 20, mode: mode, modes: cfg.spoolModes,
	}
}

func newControlPlaneLink(ctx context.Context, cfg linkConfig, src identity.Source, kr keys.Keyring, engine *posture.Engine, log *slog.Logger, reg prometheus.Registerer) (*controlPlaneLink, error) {
	if err := os.MkdirAll(cfg.stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("MEDGATE_STATE_DIR: %w", err)
	}
	l := &controlPlaneLink{mode: cfg.mode, modes: cfg.modes, max: cfg.spoolBytes, log: log}
	sp, err := spool.Open(ctx, filepath.Join(cfg.stateDir, "events"), kr, spool.Options{MaxBytes: l.max})
	if err != nil {
		return nil, fmt.Errorf("access event spool: %w", err)
	}
	l.spool = sp
	apply := func(p *posture.Policy) {
		engine.SetPolicy(p)
		if f := l.reevaluate.Load(); f != nil {
			(*f)()
		}
	}
	ag, err := agent.New(agent.Config{
		Address:   cfg.address,
		ServerID:  cfg.serverID,
		CacheFile: filepath.Join(cfg.stateDir, "policy.pb"),
		MaxAge:    cfg.maxAge,
	}, agent.Deps{Source: src, Log: log.With("component", "policy"), Check: checkPolicyProfiles, Apply: apply})
	if err != nil {
		sp.Close()
		return nil, err
	}
	l.agent = ag
	l.shipper = agent.NewShipper(ag.Conn(), sp, log.With("component", "events"))
	l.lost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "medgate_events_lost_total",
		Help: "Access events that could not be kept: dropped from a full spool (drop-oldest) or refused by it (fail-closed).",
	})
	l.pending = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "medgate_events_spooled",
		Help: "Access events in the spool not yet acknowledged by the control plane.",
	}, func() float64 { return float64(sp.Stats().Pending) })
	reg.MustRegister(l.lost, l.pending)
	return l, nil
}

// run subscribes and ships until ctx ends.
func (l *controlPlaneLink) run(ctx context.Context) error {
	go l.shipper.Run(ctx)
	return l.agent.Run(ctx)
}

func (l *controlPlaneLink) close() {
	l.agent.Close()
	if err := l.spool.Close(); err != nil {
		l.log.Error("closing the access event spool", "err", err)
	}
}

// record spools an access event for the control plane.
func (l *controlPlaneLink) record(e proxy.Event) {
	data, err := json.Marshal(e)
	if err != nil {
		l.log.Error("access event not encoded", "err", err)
		l.lost.Inc()
		return
	}
	before := l.spool.Dropped()
	if _, err := l.spool.Append(data, l.modeOf(e.Direction, e.Route)); err != nil {
		l.lost.Inc()
		if errors.Is(err, spool.ErrFull) {
			l.log.Error("ACCESS EVENT LOST: the spool is full and the control plane has not taken its events; new sessions are refused until it does", "kind", e.Kind, "route", e.Route)
			return
		}
		l.log.Error("ACCESS EVENT LOST: spool write failed", "err", err, "kind", e.Kind, "route", e.Route)
		return
	}
	if d := l.spool.Dropped() - before; d > 0 {
		l.lost.Add(float64(d))
		l.log.Error("ACCESS EVENTS DROPPED: the spool was full; the oldest events were deleted to keep this one (MEDGATE_EVENT_SPOOL_FULL=drop-oldest)", "dropped", d)
	}
}

func (l *controlPlaneLink) modeOf(direction, route string) spool.FullMode {
	if m, ok := l.modes[spoolKey(direction, route)]; ok {
		return m
	}
	return l.mode
}

// full reports whether a session on a fail-closed route must be refused
// because its events might not fit.
func (l *controlPlaneLink) full(direction, route string) bool {
	return l.modeOf(direction, route) == spool.FailClosed && l.spool.Stats().Bytes+spoolHeadroom > l.max
}

// auditGate refuses sessions while their access events cannot be kept.
type auditGate struct {
	next posture.Decider
	link *controlPlaneLink
}

func (g auditGate) Decide(req posture.Request) posture.Decision {
	d := g.next.Decide(req)
	if d.Enforced().Admitted() && g.link.full(req.Direction.String(), req.Route) {
		// Enforced even on a dry-run route: a session nobody can audit
		// does not start.
		d.Verdict, d.DryRun = posture.Deny, false
		d.Reasons = append([]posture.Reason{reasonAuditUnavailable}, d.Reasons...)
	}
	return d
}
