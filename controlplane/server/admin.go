package server

import (
	"context"

	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medgate/medgate/controlplane/api"
	"github.com/medgate/medgate/controlplane/policyset"
	"github.com/medgate/medgate/controlplane/store"
)

// admin serves policy administration to the identities named as admins.
// Every change is stored with who made it and when.
type admin struct {
	api.UnimplementedPolicyAdminServer
	s *Server
}

func (a *admin) Apply(ctx context.Context, req *api.ApplyRequest) (*api.ApplyResponse, error) {
	s := a.s
	who, err := s.admit(ctx, s.cfg.Admins, "admin", "change policy")
	if err != nil {
		return nil, err
	}
	if _, err := policyset.Compile(req.GetDocuments()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "policy refused:\n%v", err)
	}
	return s.commit(ctx, store.PolicyVersion{
		Version:   policyset.Version(req.GetDocuments()),
		Documents: fromAPI(req.GetDocuments()),
		Author:    who.String(),
		Action:    "apply",
		Comment:   req.GetComment(),
	})
}

func (a *admin) Rollback(ctx context.Context, req *api.RollbackRequest) (*api.ApplyResponse, error) {
	s := a.s
	who, err := s.admit(ctx, s.cfg.Admins, "admin", "change policy")
	if err != nil {
		return nil, err
	}
	old, err := s.version(ctx, req.GetVersion())
	if err != nil {
		return nil, err
	}
	// A rollback is a new entry in the history with the old content, so
	// the history shows it, and compiles again under today's code.
	if _, err := policyset.Compile(toAPI(old.Documents)); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "version %s no longer compiles:\n%v", old.Version, err)
	}
	return s.commit(ctx, store.PolicyVersion{
		Version:   old.Version,
		Documents: old.Documents,
		Author:    who.String(),
		Action:    "rollback",
		Comment:   "rollback to " + old.Version,
	})
}

func (s *Server) commit(ctx context.Context, v store.PolicyVersion) (*api.ApplyResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil && s.current.Version == v.Version {
		return &api.ApplyResponse{Version: v.Version, Unchanged: true}, nil
	}
	v.Time = s.now().UTC()
	if err := s.store.PutPolicy(ctx, v); err != nil {
		return nil, status.Errorf(codes.Unavailable, "storing the policy: %v", err)
	}
	s.log.Info("policy changed", "version", v.Version, "author", v.Author, "action", v.Action, "documents", len(v.Documents))
	s.setCurrentLocked(ctx, &v)
	return &api.ApplyResponse{Version: v.Version}, nil
}

// version finds v in the history; "" is the current version.
func (s *Server) version(ctx context.Context, v string) (*store.PolicyVersion, error) {
	if v == "" {
		cur, ok, err := s.store.CurrentPolicy(ctx)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "reading the current policy: %v", err)
		}
		if !ok {
			return nil, status.Error(codes.NotFound, "no policy has been applied")
		}
		return &cur, nil
	}
	hist, err := s.store.Policies(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading the policy history: %v", err)
	}
	for i := len(hist) - 1; i >= 0; i-- {
		if hist[i].Version == v {
			return &hist[i], nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "no policy version %q in the history", v)
}

func (a *admin) Get(ctx context.Context, req *api.GetRequest) (*api.PolicyVersion, error) {
	s := a.s
	if _, err := s.admit(ctx, s.cfg.Admins, "admin", "read policy"); err != nil {
		return nil, err
	}
	v, err := s.version(ctx, req.GetVersion())
	if err != nil {
		return nil, err
	}
	out := versionAPI(*v)
	out.Documents = toAPI(v.Documents)
	return out, nil
}

func (a *admin) History(ctx context.Context, _ *api.HistoryRequest) (*api.HistoryResponse, error) {
	s := a.s
	if _, err := s.admit(ctx, s.cfg.Admins, "admin", "read policy"); err != nil {
		return nil, err
	}
	hist, err := s.store.Policies(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading the policy history: %v", err)
	}
	out := &api.HistoryResponse{}
	for _, v := range hist {
		out.Versions = append(out.Versions, versionAPI(v))
	}
	return out, nil
}

func (a *admin) Status(ctx context.Context, _ *api.StatusRequest) (*api.StatusResponse, error) {
	s := a.s
	if _, err := s.admit(ctx, s.cfg.Admins, "admin", "read policy status"); err != nil {
		return nil, err
	}
	sts, err := s.store.Statuses(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading sidecar status: %v", err)
	}
	out := &api.StatusResponse{}
	s.mu.Lock()
	if s.current != nil {
		out.CurrentVersion = s.current.Version
	}
	for _, st := range sts {
		ss := &api.SidecarStatus{
			Node: st.Node, Replica: st.Replica, Connected: st.Connected,
			Acked: st.Acked, Nacked: st.Nacked, NackReason: st.NackReason,
			Updated: timestamppb.New(st.Updated),
		}
		if n := s.nodes[st.Node]; n != nil {
			ss.Expected = n.expected
		} else if s.current != nil {
			if set, err := s.expectedFor(st.Node); err == nil {
				ss.Expected = set
			}
		}
		out.Sidecars = append(out.Sidecars, ss)
	}
	s.mu.Unlock()
	slices.SortFunc(out.Sidecars, func(a, b *api.SidecarStatus) int {
		switch {
		case a.Node < b.Node:
			return -1
		case a.Node > b.Node:
			return 1
		}
		return 0
	})
	return out, nil
}

// expectedFor computes the version a sidecar connected elsewhere is served.
func (s *Server) expectedFor(nodeID string) (string, error) {
	id, err := parseID(nodeID)
	if err != nil {
		return "", err
	}
	set, _, err := s.set.ForNode(id)
	if err != nil {
		return "", err
	}
	return set.Version, nil
}

func versionAPI(v store.PolicyVersion) *api.PolicyVersion {
	return &api.PolicyVersion{
		Version: v.Version, Author: v.Author, Time: timestamppb.New(v.Time),
		Action: v.Action, Comment: v.Comment,
	}
}
