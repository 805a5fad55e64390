// Package server is the control plane: it serves each sidecar its policy
// set over ADS (go-control-plane's server and snapshot cache with our own
// resource type), takes access events on an acknowledged stream into the
// audit store, and lets policy admins change policy.
//
// Node IDs are not trusted: a sidecar's node ID must equal the SPIFFE ID
// of the SVID it authenticated with, or its stream is closed. Versions are
// content hashes, so a restarted or second replica serves the same version
// for the same policy. A NACKed version is not sent again to that sidecar;
// it gets the next version that exists.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	xds "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/medgate/medgate/controlplane/api"
	"github.com/medgate/medgate/controlplane/policyset"
	"github.com/medgate/medgate/controlplane/store"
	"github.com/medgate/medgate/identity"
)

// Config is the control plane's configuration.
type Config struct {
	// Admins may apply and roll back policy and read it and its status.
	Admins identity.Patterns
	// Sidecars may subscribe to policy and send access events.
	Sidecars identity.Patterns
	// Replica names this control plane among the replicas sharing a store.
	Replica string
	// SyncInterval is how often the store is read for policy applied
	// through another replica (default 2s).
	SyncInterval time.Duration
}

// Deps are the control plane's collaborators.
type Deps struct {
	Store store.Store
	Log   *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Registerer takes the control plane's metrics; nil means none.
	Registerer prometheus.Registerer
}

// Server is the control plane. Register it on a gRPC server whose TLS
// configuration verifies SPIFFE client certificates, then Run it.
type Server struct {
	cfg   Config
	store store.Store
	log   *slog.Logger
	now   func() time.Time
	m     *metrics

	cache cachev3.SnapshotCache
	xds   xds.Server

	mu      sync.Mutex
	current *store.PolicyVersion // nil until a policy is applied
	set     *policyset.Set       // current, prepared for the sidecars
	nodes   map[string]*node     // by SPIFFE ID
	streams map[int64]*stream

	refusals *refusalLog
}

// node is what the control plane knows of one sidecar.
type node struct {
	id       spiffeid.ID
	expected string // version of the set it is served
	status   store.NodeStatus
	streams  int
	failed   error // why its set could not be built
}

type stream struct {
	peer     spiffeid.ID
	addr     string // the caller's address
	node     string
	lastSent string // version of the last response sent on the stream
}

// New makes a control plane over an open store, loading the policy in
// force from it.
func New(ctx context.Context, cfg Config, deps Deps) (*Server, error) {
	if deps.Store == nil {
		return nil, errors.New("controlplane: no store")
	}
	if len(cfg.Admins) == 0 {
		return nil, errors.New("controlplane: no policy admins configured")
	}
	if len(cfg.Sidecars) == 0 {
		return nil, errors.New("controlplane: no sidecar identities configured")
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = 2 * time.Second
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	s := &Server{
		cfg:     cfg,
		store:   deps.Store,
		log:     deps.Log,
		now:     deps.Now,
		m:       newMetrics(deps.Registerer),
		nodes:   map[string]*node{},
		streams: map[int64]*stream{},
	}
	s.refusals = newRefusalLog(cfg.Replica, deps.Now())
	// ads=false: every sidecar subscribes to one type as a wildcard, so the
	// ADS consistency hold has nothing to order and is better left out.
	s.cache = cachev3.NewSnapshotCache(false, cachev3.IDHash{}, xdsLogger{deps.Log})
	s.xds = xds.NewServer(ctx, holdingCache{s.cache, s}, s.callbacks())
	if err := s.sync(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Register adds the ADS, access log and policy admin services to g.
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	api.RegisterAccessLogServer(g, &accessLog{s: s})
	api.RegisterPolicyAdminServer(g, &admin{s: s})
}

// Run follows the store for policy applied through other replicas until
// ctx ends.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.sync(ctx); err != nil {
				s.log.Warn("reading policy from the store", "err", err)
			}
			s.flushRefusals(ctx)
		}
	}
}

// sync loads the current policy from the store and, when it changed,
// rebuilds every known sidecar's set.
func (s *Server) sync(ctx context.Context) error {
	cur, ok, err := s.store.CurrentPolicy(ctx)
	if err != nil || !ok {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil && s.current.Version == cur.Version && s.current.Time.Equal(cur.Time) {
		return nil
	}
	s.setCurrentLocked(ctx, &cur)
	return nil
}

func (s *Server) setCurrentLocked(ctx context.Context, v *store.PolicyVersion) {
	changed := s.current == nil || s.current.Version != v.Version
	set, err := policyset.Prepare(v.Version, toAPI(v.Documents))
	if err != nil {
		// It compiled when it was applied; this is a store edited by hand.
		s.log.Error("policy in the store cannot be served; sidecars keep what they have", "version", v.Version, "err", err)
		return
	}
	s.current, s.set = v, set
	if changed {
		s.log.Info("policy in force", "version", v.Version, "author", v.Author, "action", v.Action)
	}
	for _, n := range s.nodes {
		s.refreshLocked(ctx, n)
	}
}

// refreshLocked builds n's set from the current policy and hands it to the
// cache, which answers n's open watch when the version differs.
func (s *Server) refreshLocked(ctx context.Context, n *node) {
	if s.current == nil {
		return
	}
	set, _, err := s.set.ForNode(n.id)
	if err != nil {
		// The whole set compiled when it was applied, and a selection of
		// it always does; this is a bug or a store edited by hand.
		n.failed = err
		s.log.Error("cannot build a sidecar's policy set; it keeps its last one", "node", n.id.String(), "err", err)
		return
	}
	n.failed = nil
	if n.expected == set.Version {
		return
	}
	n.expected = set.Version
	if err := s.cache.SetSnapshot(ctx, n.id.String(), snapshot{version: set.Version, set: set}); err != nil {
		s.log.Error("setting a sidecar's snapshot", "node", n.id.String(), "err", err)
	}
}

// nodeLocked returns the node for id, registering it on first sight.
func (s *Server) nodeLocked(ctx context.Context, id spiffeid.ID) *node {
	n := s.nodes[id.String()]
	if n == nil {
		n = &node{id: id, status: store.NodeStatus{Node: id.String(), Replica: s.cfg.Replica}}
		s.nodes[id.String()] = n
		s.refreshLocked(ctx, n)
	}
	return n
}

func (s *Server) putStatus(st store.NodeStatus) {
	st.Updated = s.now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.store.PutStatus(ctx, st); err != nil {
		s.log.Warn("recording a sidecar's status", "node", st.Node, "err", err)
	}
}

// peerID is the SPIFFE ID of the client certificate of the gRPC call.
func peerID(ctx context.Context) (spiffeid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "not a TLS connection")
	}
	id, err := identity.PeerID(ti.State)
	if err != nil {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "no SPIFFE ID in the client certificate")
	}
	return id, nil
}

// authorize returns the caller's ID when it matches ps.
func authorize(ctx context.Context, ps identity.Patterns, what string) (spiffeid.ID, error) {
	id, err := peerID(ctx)
	if err != nil {
		return id, err
	}
	if !ps.Match(id) {
		return id, status.Errorf(codes.PermissionDenied, "%s is not allowed to %s", id, what)
	}
	return id, nil
}

func toAPI(docs []store.Document) []*api.Document {
	out := make([]*api.Document, len(docs))
	for i, d := range docs {
		out[i] = &api.Document{Name: d.Name, Yaml: d.YAML}
	}
	return out
}

func fromAPI(docs []*api.Document) []store.Document {
	out := make([]store.Document, len(docs))
	for i, d := range docs {
		out[i] = store.Document{Name: d.GetName(), YAML: d.GetYaml()}
	}
	return out
}

// xdsLogger sends go-control-plane's log to slog at debug level.
type xdsLogger struct{ log *slog.Logger }

func (l xdsLogger) Debugf(format string, args ...any) { l.log.Debug(fmt.Sprintf(format, args...)) }
func (l xdsLogger) Infof(format string, args ...any)  { l.log.Debug(fmt.Sprintf(format, args...)) }
func (l xdsLogger) Warnf(format string, args ...any)  { l.log.Warn(fmt.Sprintf(format, args...)) }
func (l xdsLogger) Errorf(format string, args ...any) { l.log.Error(fmt.Sprintf(format, args...)) }

func parseID(s string) (spiffeid.ID, error) { return spiffeid.FromString(s) }
