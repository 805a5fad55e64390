package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/medgate/medgate/controlplane/api"
	"github.com/medgate/medgate/controlplane/policyset"
	"github.com/medgate/medgate/crypto/keys"
	"github.com/medgate/medgate/posture"
)

// settle is how long a subscription must stay open before it counts as
// accepted when the control plane has nothing new to send: the control
// plane refuses a subscription (identity, node ID) on its first request.
const settle = 2 * time.Second

// subscribe runs one ADS stream until it fails.
func (a *Agent) subscribe(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(a.conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	version := a.version
	a.mu.Unlock()
	if err := st.Send(&discovery.DiscoveryRequest{
		Node:        &core.Node{Id: a.node.String()},
		TypeUrl:     api.PolicySetType,
		VersionInfo: version,
	}); err != nil {
		return err
	}
	settled := time.AfterFunc(settle, a.confirm)
	defer settled.Stop()
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		a.confirm()
		req := &discovery.DiscoveryRequest{
			Node:          &core.Node{Id: a.node.String()},
			TypeUrl:       api.PolicySetType,
			ResponseNonce: resp.GetNonce(),
		}
		set, p, err := a.accept(resp)
		a.mu.Lock()
		if err != nil {
			req.VersionInfo = a.version
			req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
			a.mu.Unlock()
			a.log.Error("policy set refused; the last good policy stays in force", "version", resp.GetVersionInfo(), "err", err)
		} else {
			changed := a.version != set.GetVersion() || !a.inForce
			a.mu.Unlock()
			req.VersionInfo = set.GetVersion()
			if changed {
				a.deps.Apply(p)
				a.log.Info("policy in force", "policy_version", p.Version, "source_version", set.GetSourceVersion())
			}
			// Published once in force, so Version never runs ahead of
			// what decides.
			a.mu.Lock()
			a.held, a.version, a.inForce = p, set.GetVersion(), true
			a.mu.Unlock()
			// Kept on disk before the ACK: a version the control plane
			// counts as applied survives a restart.
			if err := a.saveCache(set); err != nil {
				a.log.Warn("cannot keep the policy set on disk; a restart will wait for the control plane", "file", a.cfg.CacheFile, "err", err)
			}
		}
		if err := st.Send(req); err != nil {
			return err
		}
	}
}

// accept decodes and checks a response; an error is the NACK's reason.
func (a *Agent) accept(resp *discovery.DiscoveryResponse) (*api.PolicySet, *posture.Policy, error) {
	if resp.GetTypeUrl() != api.PolicySetType {
		return nil, nil, fmt.Errorf("unexpected resource type %q", resp.GetTypeUrl())
	}
	if n := len(resp.GetResources()); n != 1 {
		return nil, nil, fmt.Errorf("want one policy set, got %d resources", n)
	}
	set := &api.PolicySet{}
	if err := resp.GetResources()[0].UnmarshalTo(set); err != nil {
		return nil, nil, fmt.Errorf("decoding the policy set: %w", err)
	}
	p, err := a.compile(set)
	if err != nil {
		return nil, nil, err
	}
	if resp.GetVersionInfo() != set.GetVersion() {
		return nil, nil, fmt.Errorf("response version %q is not the policy set's version %q", resp.GetVersionInfo(), set.GetVersion())
	}
	return set, p, nil
}

// compile compiles a set and checks it is what its version says and that
// this sidecar can enforce it.
func (a *Agent) compile(set *api.PolicySet) (*posture.Policy, error) {
	p, err := policyset.Load(set.GetDocuments())
	if err != nil {
		return nil, err
	}
	if p.Version != set.GetVersion() {
		return nil, fmt.Errorf("policy set claims version %q but compiles to %q", set.GetVersion(), p.Version)
	}
	if a.deps.Check != nil {
		if err := a.deps.Check(p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// loadCache puts the policy set kept on disk in force when it is younger
// than MaxAge; its age is the file's modification time, the last time the
// control plane was known to serve it.
func (a *Agent) loadCache() {
	data, err := os.ReadFile(a.cfg.CacheFile)
	if errors.Is(err, os.ErrNotExist) {
		a.log.Info("no policy kept on disk; refusing traffic until the control plane sends one", "file", a.cfg.CacheFile)
		return
	}
	fi, serr := os.Stat(a.cfg.CacheFile)
	if err != nil || serr != nil {
		a.log.Warn("cannot read the policy kept on disk; refusing traffic until the control plane sends one", "file", a.cfg.CacheFile, "err", errors.Join(err, serr))
		return
	}
	set := &api.PolicySet{}
	if err := proto.Unmarshal(data, set); err != nil {
		a.log.Warn("policy kept on disk is corrupt; refusing traffic until the control plane sends one", "file", a.cfg.CacheFile, "err", err)
		return
	}
	p, err := a.compile(set)
	if err != nil {
		a.log.Warn("policy kept on disk no longer loads; refusing traffic until the control plane sends one", "file", a.cfg.CacheFile, "err", err)
		return
	}
	a.held, a.version, a.contact = p, set.GetVersion(), fi.ModTime()
	if age := a.deps.Now().Sub(fi.ModTime()); age > a.cfg.MaxAge {
		a.log.Warn("policy kept on disk is older than the maximum age; refusing traffic until the control plane confirms it",
			"file", a.cfg.CacheFile, "age", age.Round(time.Second), "max_age", a.cfg.MaxAge)
		return
	}
	a.inForce = true
	a.log.Info("policy in force from disk until the control plane confirms it", "policy_version", p.Version, "file", a.cfg.CacheFile)
	a.deps.Apply(p)
}

// saveCache writes set atomically, readable by the sidecar's user only.
func (a *Agent) saveCache(set *api.PolicySet) error {
	data, err := proto.Marshal(set)
	if err != nil {
		return err
	}
	return keys.WriteFileAtomic(a.cfg.CacheFile, data, 0o600)
}

// touchCache records that the control plane still serves the kept set.
func (a *Agent) touchCache() {
	now := a.deps.Now()
	if err := os.Chtimes(a.cfg.CacheFile, now, now); err != nil && !errors.Is(err, os.ErrNotExist) {
		a.log.Debug("touching the policy kept on disk", "err", err)
	}
}
