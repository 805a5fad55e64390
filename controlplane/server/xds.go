package server

import (
	"context"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	xds "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/medgate/medgate/controlplane/api"
	"github.com/medgate/medgate/controlplane/store"
)

// snapshot is one sidecar's policy set as a go-control-plane resource
// snapshot. cache.NewSnapshot only knows Envoy's types, so the policy set
// type gets its own.
type snapshot struct {
	version string
	set     *api.PolicySet
}

var _ cachev3.ResourceSnapshot = snapshot{}

func (s snapshot) GetVersion(typeURL string) string {
	if typeURL != api.PolicySetType {
		return ""
	}
	return s.version
}

func (s snapshot) GetResourcesAndTTL(typeURL string) map[string]types.ResourceWithTTL {
	if typeURL != api.PolicySetType {
		return nil
	}
	return map[string]types.ResourceWithTTL{api.PolicySetName: {Resource: s.set}}
}

func (s snapshot) GetResources(typeURL string) map[string]types.Resource {
	if typeURL != api.PolicySetType {
		return nil
	}
	return map[string]types.Resource{api.PolicySetName: s.set}
}

func (s snapshot) ConstructVersionMap() error { return nil }

func (s snapshot) GetVersionMap(typeURL string) map[string]string {
	if typeURL != api.PolicySetType {
		return nil
	}
	return map[string]string{api.PolicySetName: s.version}
}

// holdingCache keeps a sidecar that NACKed the version it holds waiting
// for the next version. Without it the snapshot cache would answer the
// NACK, which names the last version the sidecar accepted, with the same
// rejected version again, in a tight loop.
type holdingCache struct {
	cachev3.SnapshotCache
	s *Server
}

func (h holdingCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, ch chan cachev3.Response) (func(), error) {
	if req.GetErrorDetail() != nil {
		if snap, err := h.SnapshotCache.GetSnapshot(req.GetNode().GetId()); err == nil {
			if cur := snap.GetVersion(req.GetTypeUrl()); cur != req.GetVersionInfo() {
				held := proto.Clone(req).(*discovery.DiscoveryRequest)
				held.VersionInfo = cur
				req = held
			}
		}
	}
	return h.SnapshotCache.CreateWatch(req, sub, ch)
}

func (s *Server) callbacks() xds.Callbacks {
	return xds.CallbackFuncs{
		StreamOpenFunc:   s.onStreamOpen,
		StreamClosedFunc: s.onStreamClosed,
		StreamRequestFunc: func(id int64, req *discovery.DiscoveryRequest) error {
			return s.onStreamRequest(id, req)
		},
		StreamResponseFunc: s.onStreamResponse,
		DeltaStreamOpenFunc: func(context.Context, int64, string) error {
			return status.Error(codes.Unimplemented, "incremental xDS is not served; use the state-of-the-world ADS stream")
		},
		FetchRequestFunc: func(context.Context, *discovery.DiscoveryRequest) error {
			return status.Error(codes.Unimplemented, "fetch is not served; use the ADS stream")
		},
	}
}

func (s *Server) onStreamOpen(ctx context.Context, id int64, typeURL string) error {
	if typeURL != "" {
		return status.Error(codes.Unimplemented, "only the aggregated (ADS) stream is served")
	}
	pid, err := s.admit(ctx, s.cfg.Sidecars, "ads", "subscribe to policy")
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.streams[id] = &stream{peer: pid, addr: peerAddr(ctx)}
	s.mu.Unlock()
	return nil
}

func (s *Server) onStreamClosed(id int64, _ *core.Node) {
	s.mu.Lock()
	st := s.streams[id]
	delete(s.streams, id)
	var update *store.NodeStatus
	if st != nil && st.node != "" {
		if n := s.nodes[st.node]; n != nil {
			n.streams--
			if n.streams <= 0 {
				n.streams = 0
				n.status.Connected = false
				s.m.connected.Dec()
				u := n.status
				update = &u
			}
		}
	}
	s.mu.Unlock()
	if update != nil {
		s.log.Info("sidecar disconnected", "node", update.Node)
		s.putStatus(*update)
	}
}

func (s *Server) onStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	if req.GetTypeUrl() != api.PolicySetType {
		return status.Errorf(codes.InvalidArgument, "unknown resource type %q; this control plane serves %s", req.GetTypeUrl(), api.PolicySetType)
	}
	s.mu.Lock()
	st := s.streams[id]
	if st == nil {
		s.mu.Unlock()
		return status.Error(codes.Internal, "unknown stream")
	}
	nodeID := req.GetNode().GetId()
	if nodeID != st.peer.String() {
		s.mu.Unlock()
		return s.refuse(context.Background(), "ads", st.peer, st.addr, "node_id_mismatch",
			status.Errorf(codes.PermissionDenied, "node ID %q is not the SPIFFE ID of the client certificate (%s)", nodeID, st.peer))
	}
	ctx := context.Background()
	n := s.nodeLocked(ctx, st.peer)
	var update *store.NodeStatus
	if st.node == "" {
		st.node = nodeID
		n.streams++
		if n.streams == 1 {
			s.m.connected.Inc()
		}
		n.status.Connected = true
		u := n.status
		update = &u
		s.log.Info("sidecar subscribed", "node", nodeID, "version", req.GetVersionInfo())
	}
	if req.GetResponseNonce() != "" && st.lastSent != "" {
		if d := req.GetErrorDetail(); d != nil {
			n.status.Nacked = st.lastSent
			n.status.NackReason = d.GetMessage()
			s.m.responses.WithLabelValues("nack").Inc()
			s.log.Warn("sidecar refused a policy version; it keeps its last one", "node", nodeID, "version", st.lastSent, "reason", d.GetMessage())
		} else if req.GetVersionInfo() == st.lastSent {
			if n.status.Acked != st.lastSent {
				s.log.Info("sidecar applied a policy version", "node", nodeID, "version", st.lastSent)
			}
			n.status.Acked = st.lastSent
			n.status.Nacked, n.status.NackReason = "", ""
			s.m.responses.WithLabelValues("ack").Inc()
		}
		u := n.status
		update = &u
	} else if v := req.GetVersionInfo(); v != "" && n.status.Acked == "" {
		// Resubscribing after a reconnect: it runs the version it names.
		n.status.Acked = v
		u := n.status
		update = &u
	}
	s.mu.Unlock()
	if update != nil {
		s.putStatus(*update)
	}
	return nil
}

func (s *Server) onStreamResponse(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	s.mu.Lock()
	if st := s.streams[id]; st != nil {
		st.lastSent = resp.GetVersionInfo()
	}
	s.mu.Unlock()
	s.log.Debug("policy set sent", "stream", id, "version", resp.GetVersionInfo())
}
