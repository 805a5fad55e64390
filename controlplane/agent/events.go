package agent

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"

	"github.com/medgate/medgate/controlplane/api"
	"github.com/medgate/medgate/controlplane/spool"
)

// batchSize bounds the events sent in one message.
const batchSize = 256

// Shipper sends the access events in a spool to the control plane and
// deletes them from the spool once the control plane has committed them.
// After a reconnect it sends again everything not acknowledged; the
// control plane stores each sequence number once.
type Shipper struct {
	conn  *grpc.ClientConn
	spool *spool.Spool
	log   *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between reconnects.
	MinBackoff, MaxBackoff time.Duration
}

// NewShipper ships sp's events over conn.
func NewShipper(conn *grpc.ClientConn, sp *spool.Spool, log *slog.Logger) *Shipper {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Shipper{conn: conn, spool: sp, log: log, MinBackoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second}
}

// Run ships until ctx ends.
func (s *Shipper) Run(ctx context.Context) error {
	backoff := s.MinBackoff
	for {
		start := time.Now()
		err := s.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			backoff = s.MinBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		st := s.spool.Stats()
		s.log.Warn("access event stream ended; events stay in the spool", "err", err, "pending", st.Pending, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, s.MaxBackoff)
	}
}

func (s *Shipper) stream(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := api.NewAccessLogClient(s.conn).Stream(ctx)
	if err != nil {
		return err
	}
	// The first message says what the control plane already holds.
	first, err := st.Recv()
	if err != nil {
		return err
	}
	after := first.GetCommitted()
	if last := s.spool.Stats().Last; after > last {
		// The control plane holds more of ours than we ever wrote: the
		// spool was reset. Its new events would be taken for duplicates.
		return errors.New("the control plane already holds events with higher sequence numbers than this spool has written; the spool directory was replaced: restore it, or give this sidecar a new SPIFFE ID")
	}
	if err := s.spool.Ack(after); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		for {
			ack, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			if err := s.spool.Ack(ack.GetCommitted()); err != nil {
				errc <- err
				return
			}
		}
	}()
	for {
		recs, err := s.spool.Pending(after, batchSize)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case err := <-errc:
				return err
			case <-s.spool.Wait(after):
			}
			continue
		}
		b := &api.EventBatch{Events: make([]*api.Event, len(recs))}
		for i, r := range recs {
			b.Events[i] = &api.Event{Seq: r.Seq, Record: r.Data}
		}
		if err := st.Send(b); err != nil {
			return err
		}
		after = recs[len(recs)-1].Seq
		select {
		case err := <-errc:
			return err
		default:
		}
	}
}
