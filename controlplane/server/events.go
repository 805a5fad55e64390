package server

import (
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medgate/medgate/controlplane/api"
	"github.com/medgate/medgate/controlplane/store"
)

// Limits on what one sidecar sends.
const (
	maxBatchEvents = 4096
	maxRecordSize  = 64 << 10
)

// accessLog takes access events from sidecars into the store. Each batch
// is committed before it is acknowledged; the sidecar deletes events from
// its spool only then. The source of every event is the SPIFFE ID of the
// sending sidecar's certificate, never what the event says.
type accessLog struct {
	api.UnimplementedAccessLogServer
	s *Server
}

func (a *accessLog) Stream(st api.AccessLog_StreamServer) error {
	s := a.s
	ctx := st.Context()
	src, err := s.admit(ctx, s.cfg.Sidecars, "events", "send access events")
	if err != nil {
		return err
	}
	// Tell the sidecar what is already stored, so it drops what a lost
	// acknowledgement left in its spool.
	hw, err := s.store.HighWater(ctx, src.String())
	if err != nil {
		return status.Errorf(codes.Unavailable, "audit store: %v", err)
	}
	if err := st.Send(&api.EventAck{Committed: hw}); err != nil {
		return err
	}
	for {
		batch, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		evs := batch.GetEvents()
		if len(evs) == 0 {
			continue
		}
		if len(evs) > maxBatchEvents {
			return status.Errorf(codes.InvalidArgument, "batch of %d events, more than %d", len(evs), maxBatchEvents)
		}
		in := make([]store.Event, len(evs))
		var top uint64
		for i, e := range evs {
			if len(e.GetRecord()) > maxRecordSize {
				return status.Errorf(codes.InvalidArgument, "event %d is %d bytes, more than %d", e.GetSeq(), len(e.GetRecord()), maxRecordSize)
			}
			if e.GetSeq() == 0 {
				return status.Error(codes.InvalidArgument, "event without a sequence number")
			}
			in[i] = store.Event{Source: src.String(), Seq: e.GetSeq(), Record: e.GetRecord()}
			top = max(top, e.GetSeq())
		}
		if err := s.store.Append(ctx, in); err != nil {
			s.m.failed.Inc()
			s.log.Error("storing access events", "source", src.String(), "err", err)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, store.ErrInvalidEvent) {
				return status.Errorf(codes.InvalidArgument, "events not stored: %v", err)
			}
			return status.Errorf(codes.Unavailable, "events not stored: %v", err)
		}
		s.m.events.Add(float64(len(in)))
		if err := st.Send(&api.EventAck{Committed: top}); err != nil {
			return err
		}
	}
}
