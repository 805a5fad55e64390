package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// schema lists the migrations of the PostgreSQL store; the schema version
// is the number applied. Append only.
var schema = []string{
	// 1: the chain, its checkpoints, the policy history, node status.
	`CREATE TABLE medgate_chain_head (
		id   boolean PRIMARY KEY DEFAULT true CHECK (id),
		idx  bigint NOT NULL,
		hash bytea NOT NULL
	);
	INSERT INTO medgate_chain_head (idx, hash) VALUES (0, decode(repeat('00', 32), 'hex'));
	CREATE TABLE medgate_events (
		idx      bigint PRIMARY KEY,
		received timestamptz NOT NULL,
		source   text NOT NULL,
		seq      bigint NOT NULL,
		record   bytea NOT NULL,
		prev     bytea NOT NULL,
		hash     bytea NOT NULL,
		ev_time  timestamptz,
		peer     text NOT NULL,
		route    text NOT NULL,
		verdict  text NOT NULL,
		local_jurisdiction text NOT NULL,
		peer_jurisdiction  text NOT NULL,
		study_uid text NOT NULL,
		patient   text NOT NULL,
		UNIQUE (source, seq)
	);
	CREATE INDEX medgate_events_ev_time ON medgate_events (ev_time);
	CREATE INDEX medgate_events_patient ON medgate_events (patient) WHERE patient <> '';
	CREATE INDEX medgate_events_study_uid ON medgate_events (study_uid) WHERE study_uid <> '';
	CREATE TABLE medgate_checkpoints (
		id         bigserial PRIMARY KEY,
		idx        bigint NOT NULL,
		hash       bytea NOT NULL,
		time       timestamptz NOT NULL,
		public_key bytea NOT NULL,
		signature  bytea NOT NULL
	);
	CREATE TABLE medgate_policies (
		id        bigserial PRIMARY KEY,
		version   text NOT NULL,
		documents bytea NOT NULL,
		author    text NOT NULL,
		time      timestamptz NOT NULL,
		action    text NOT NULL,
		comment   text NOT NULL
	);
	CREATE TABLE medgate_node_status (
		node        text PRIMARY KEY,
		replica     text NOT NULL,
		connected   boolean NOT NULL,
		acked       text NOT NULL,
		nacked      text NOT NULL,
		nack_reason text NOT NULL,
		updated     timestamptz NOT NULL
	);`,
}

// migrationLock is the pg_advisory_xact_lock key that serializes schema
// changes between replicas starting together ("medgate" in ASCII).
const migrationLock = 0x6d65646761746500

// pgStore is the PostgreSQL store. Appends from every replica serialize on
// the one row of medgate_chain_head, locked FOR UPDATE in the transaction.
type pgStore struct {
	group    groupCommit
	cfg      Config
	deps     Deps
	pool     *connPool
	readOnly bool
}

var _ Store = (*pgStore)(nil)

func openPostgres(ctx context.Context, cfg Config, deps Deps) (*pgStore, error) {
	pc, err := pgx.ParseConfig(cfg.URL)
	if err != nil {
		// pgx's message quotes the URL, and its password redaction is
		// best effort on malformed input.
		return nil, errors.New("store: PostgreSQL URL does not parse (not repeated here: it may hold a password)")
	}
	s := &pgStore{cfg: cfg, deps: deps, pool: newConnPool(pc, cfg.MaxConns), readOnly: deps.Signer == nil}
	err = s.pool.with(ctx, func(c *pgx.Conn) error {
		if s.readOnly {
			return checkSchema(ctx, c)
		}
		return migrate(ctx, c)
	})
	if err != nil {
		s.pool.close()
		return nil, err
	}
	return s, nil
}

func checkSchema(ctx context.Context, c *pgx.Conn) error {
	var v int
	err := c.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM medgate_store_schema`).Scan(&v)
	if err != nil {
		return fmt.Errorf("store: no medgate store in this database (read schema version: %w)", err)
	}
	if v > len(schema) {
		return fmt.Errorf("store: database schema version %d is newer than this program's %d", v, len(schema))
	}
	if v < len(schema) {
		return fmt.Errorf("store: database schema version %d is older than this program's %d: open it writable once to upgrade", v, len(schema))
	}
	return nil
}

func migrate(ctx context.Context, c *pgx.Conn) error {
	return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
			return fmt.Errorf("store: lock schema: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS medgate_store_schema (version integer NOT NULL)`); err != nil {
			return fmt.Errorf("store: create schema table: %w", err)
		}
		var v int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM medgate_store_schema`).Scan(&v); err != nil {
			return fmt.Errorf("store: read schema version: %w", err)
		}
		if v > len(schema) {
			return fmt.Errorf("store: database schema version %d is newer than this program's %d", v, len(schema))
		}
		for i := v; i < len(schema); i++ {
			if _, err := tx.Exec(ctx, schema[i]); err != nil {
				return fmt.Errorf("store: apply schema version %d: %w", i+1, err)
			}
		}
		if v < len(schema) {
			if _, err := tx.Exec(ctx, `DELETE FROM medgate_store_schema`); err != nil {
				return fmt.Errorf("store: record schema version: %w", err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO medgate_store_schema (version) VALUES ($1)`, len(schema)); err != nil {
				return fmt.Errorf("store: record schema version: %w", err)
			}
		}
		return nil
	})
}

func (s *pgStore) Append(ctx context.Context, events []Event) error {
	fs := make([]fields, len(events))
	for i, e := range events {
		f, err := validate(i, e, true)
		if err != nil {
			return err
		}
		fs[i] = f
	}
	if s.readOnly {
		return ErrReadOnly
	}
	if len(events) == 0 {
		return nil
	}
	return s.group.append(ctx, events, fs, func(ctx context.Context, events []Event, fs []fields) error {
		return s.pool.with(ctx, func(c *pgx.Conn) error {
			return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
				return s.appendTx(ctx, tx, events, fs)
			})
		})
	})
}

// groupCommit merges concurrent Appends of one store into one transaction:
// appends serialize on the chain head anyway, and one commit (one WAL
// flush) for many small batches is what keeps a replica that serves many
// sidecars from being bound by commit latency.
type groupCommit struct {
	mu      sync.Mutex
	queue   []*groupBatch
	leading bool
}

type groupBatch struct {
	events []Event
	fields []fields
	done   chan error    // the outcome, once
	lead   chan struct{} // closed when this batch's caller is to lead
}

// maxGroupEvents bounds the events of one merged transaction.
const maxGroupEvents = 5000

func (g *groupCommit) append(ctx context.Context, events []Event, fs []fields, commit func(context.Context, []Event, []fields) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := &groupBatch{events: events, fields: fs, done: make(chan error, 1), lead: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, b)
	lead := !g.leading
	g.leading = true
	g.mu.Unlock()
	if !lead {
		// No giving up on ctx here: a waiter that left could be handed the
		// lead and stall the queue. The wait is bounded by the leader's
		// transaction timeout.
		select {
		case err := <-b.done:
			return err
		case <-b.lead:
		}
	}
	// Lead one round: commit what is queued (this batch first among it),
	// then hand the lead to the next waiter, if any.
	g.mu.Lock()
	var round []*groupBatch
	n := 0
	for len(g.queue) > 0 && (len(round) == 0 || n+len(g.queue[0].events) <= maxGroupEvents) {
		round = append(round, g.queue[0])
		n += len(g.queue[0].events)
		g.queue = g.queue[1:]
	}
	g.mu.Unlock()
	var evs []Event
	var fls []fields
	if len(round) == 1 {
		evs, fls = round[0].events, round[0].fields
	} else {
		evs, fls = make([]Event, 0, n), make([]fields, 0, n)
		for _, r := range round {
			evs, fls = append(evs, r.events...), append(fls, r.fields...)
		}
	}
	// The others' batches ride on this caller's transaction: its
	// cancellation must not fail them.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	err := commit(cctx, evs, fls)
	cancel()
	for _, r := range round {
		r.done <- err
	}
	g.mu.Lock()
	if len(g.queue) > 0 {
		close(g.queue[0].lead)
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	return <-b.done
}

func (s *pgStore) appendTx(ctx context.Context, tx pgx.Tx, events []Event, fs []fields) error {
	var headIdx int64
	var headHash []byte
	if err := tx.QueryRow(ctx, `SELECT idx, hash FROM medgate_chain_head FOR UPDATE`).Scan(&headIdx, &headHash); err != nil {
		return fmt.Errorf("store: lock chain head: %w", err)
	}
	var sources []string
	seen := make(map[string]bool)
	for _, e := range events {
		if !seen[e.Source] {
			seen[e.Source] = true
			sources = append(sources, e.Source)
		}
	}
	hw := make(map[string]uint64, len(sources))
	rows, err := tx.Query(ctx, `SELECT s.source, coalesce((SELECT max(e.seq) FROM medgate_events e WHERE e.source = s.source), 0)
		FROM unnest($1::text[]) AS s(source)`, sources)
	if err != nil {
		return fmt.Errorf("store: read high-water marks: %w", err)
	}
	for rows.Next() {
		var src string
		var seq int64
		if err := rows.Scan(&src, &seq); err != nil {
			return fmt.Errorf("store: read high-water marks: %w", err)
		}
		hw[src] = uint64(seq)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: read high-water marks: %w", err)
	}

	var fresh []int
	for i, e := range events {
		if e.Seq > hw[e.Source] {
			hw[e.Source] = e.Seq
			fresh = append(fresh, i)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	received := now(s.deps)
	ch := newChainer(uint64(headIdx), headHash)
	n := len(fresh)
	var (
		idx      = make([]int64, n)
		recv     = make([]time.Time, n)
		source   = make([]string, n)
		seq      = make([]int64, n)
		record   = make([][]byte, n)
		prev     = make([][]byte, n)
		hash     = make([][]byte, n)
		evTime   = make([]pgtype.Timestamptz, n)
		peer     = make([]string, n)
		route    = make([]string, n)
		verdict  = make([]string, n)
		localJur = make([]string, n)
		peerJur  = make([]string, n)
		study    = make([]string, n)
		patient  = make([]string, n)
	)
	for j, i := range fresh {
		e := ch.next(events[i], received)
		f := fs[i]
		idx[j], recv[j], source[j], seq[j] = int64(e.Index), received, e.Source, int64(e.Seq)
		record[j], prev[j], hash[j] = e.Record, e.Prev, e.Hash
		evTime[j] = pgtype.Timestamptz{Time: f.Time, Valid: f.hasValidTime}
		peer[j], route[j], verdict[j] = f.Peer, f.Route, f.Verdict
		localJur[j], peerJur[j], study[j], patient[j] = f.LocalJur, f.PeerJur, f.StudyUID, f.Patient
	}
	tag, err := tx.Exec(ctx, `INSERT INTO medgate_events
		(idx, received, source, seq, record, prev, hash, ev_time, peer, route, verdict, local_jurisdiction, peer_jurisdiction, study_uid, patient)
		SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::bigint[], $5::bytea[], $6::bytea[], $7::bytea[],
			$8::timestamptz[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])
		ON CONFLICT (source, seq) DO NOTHING`,
		idx, recv, source, seq, record, prev, hash, evTime, peer, route, verdict, localJur, peerJur, study, patient)
	if err != nil {
		return fmt.Errorf("store: insert events: %w", err)
	}
	if tag.RowsAffected() != int64(n) {
		// Only a writer that bypassed the chain-head lock can cause this;
		// committing would leave holes in the chain.
		return fmt.Errorf("store: insert events: %d of %d were already stored by a writer that does not lock the chain head", int64(n)-tag.RowsAffected(), n)
	}
	if _, err := tx.Exec(ctx, `UPDATE medgate_chain_head SET idx = $1, hash = $2`, int64(ch.index), ch.hash); err != nil {
		return fmt.Errorf("store: update chain head: %w", err)
	}
	if every := s.cfg.CheckpointEvery; every > 0 && ch.index/uint64(every) > uint64(headIdx)/uint64(every) {
		if err := s.insertCheckpoint(ctx, tx, ch.index, ch.hash); err != nil {
			return err
		}
	}
	return nil
}

func (s *pgStore) insertCheckpoint(ctx context.Context, tx pgx.Tx, idx uint64, hash []byte) error {
	c := signCheckpoint(s.deps.Signer, idx, hash, now(s.deps))
	_, err := tx.Exec(ctx, `INSERT INTO medgate_checkpoints (idx, hash, time, public_key, signature) VALUES ($1, $2, $3, $4, $5)`,
		int64(c.Index), c.Hash, c.Time, []byte(c.PublicKey), c.Signature)
	if err != nil {
		return fmt.Errorf("store: insert checkpoint: %w", err)
	}
	return nil
}

func (s *pgStore) HighWater(ctx context.Context, source string) (uint64, error) {
	var hw int64
	err := s.pool.with(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM medgate_events WHERE source = $1`, source).Scan(&hw)
	})
	if err != nil {
		return 0, fmt.Errorf("store: read high-water mark: %w", err)
	}
	return uint64(hw), nil
}

func (s *pgStore) Query(ctx context.Context, f Filter) ([]Entry, error) {
	return collect(ctx, s, f)
}

func (s *pgStore) Scan(ctx context.Context, f Filter, fn func(Entry) error) error {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	for _, c := range []struct {
		col, v string
	}{{"source", f.Source}, {"peer", f.Peer}, {"route", f.Route}, {"verdict", f.Verdict}, {"study_uid", f.StudyUID}, {"patient", f.Patient}} {
		if c.v != "" {
			add(c.col+" = ?", c.v)
		}
	}
	if f.Jurisdiction != "" {
		add("(local_jurisdiction = ? OR peer_jurisdiction = ?)", f.Jurisdiction)
	}
	if !f.Since.IsZero() {
		add("ev_time >= ?", f.Since.UTC().Truncate(time.Microsecond))
	}
	if !f.Until.IsZero() {
		add("ev_time < ?", f.Until.UTC().Truncate(time.Microsecond))
	}
	q := `SELECT idx, received, source, seq, record, prev, hash FROM medgate_events`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY idx"
	if f.Limit > 0 {
		q += " LIMIT " + strconv.Itoa(f.Limit)
	}
	return s.pool.with(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("store: query events: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var e Entry
			var idx, seq int64
			if err := rows.Scan(&idx, &e.Received, &e.Source, &seq, &e.Record, &e.Prev, &e.Hash); err != nil {
				return fmt.Errorf("store: read events: %w", err)
			}
			e.Index, e.Seq, e.Received = uint64(idx), uint64(seq), e.Received.UTC()
			if err := fn(e); err != nil {
				return err
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("store: read events: %w", err)
		}
		return nil
	})
}

func (s *pgStore) Checkpoint(ctx context.Context) error {
	if s.readOnly {
		return ErrReadOnly
	}
	return s.pool.with(ctx, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			var idx int64
			var hash []byte
			if err := tx.QueryRow(ctx, `SELECT idx, hash FROM medgate_chain_head FOR UPDATE`).Scan(&idx, &hash); err != nil {
				return fmt.Errorf("store: lock chain head: %w", err)
			}
			return s.insertCheckpoint(ctx, tx, uint64(idx), hash)
		})
	})
}

func (s *pgStore) Checkpoints(ctx context.Context) ([]Checkpoint, error) {
	var out []Checkpoint
	err := s.pool.with(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT idx, hash, time, public_key, signature FROM medgate_checkpoints ORDER BY id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var cp Checkpoint
			var idx int64
			var pub []byte
			if err := rows.Scan(&idx, &cp.Hash, &cp.Time, &pub, &cp.Signature); err != nil {
				return err
			}
			cp.Index, cp.PublicKey, cp.Time = uint64(idx), pub, cp.Time.UTC()
			out = append(out, cp)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: read checkpoints: %w", err)
	}
	return out, nil
}

func (s *pgStore) PutPolicy(ctx context.Context, v PolicyVersion) error {
	if err := validatePolicy(v); err != nil {
		return err
	}
	if s.readOnly {
		return ErrReadOnly
	}
	if v.Time.IsZero() {
		v.Time = now(s.deps)
	}
	docs, err := json.Marshal(v.Documents)
	if err != nil {
		return fmt.Errorf("store: encode policy documents: %w", err)
	}
	err = s.pool.with(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `INSERT INTO medgate_policies (version, documents, author, time, action, comment) VALUES ($1, $2, $3, $4, $5, $6)`,
			v.Version, docs, v.Author, v.Time.UTC().Truncate(time.Microsecond), v.Action, v.Comment)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: insert policy version %s: %w", v.Version, err)
	}
	return nil
}

func (s *pgStore) CurrentPolicy(ctx context.Context) (PolicyVersion, bool, error) {
	var v PolicyVersion
	var found bool
	err := s.pool.with(ctx, func(c *pgx.Conn) error {
		var docs []byte
		err := c.QueryRow(ctx, `SELECT version, documents, author, time, action, comment FROM medgate_policies ORDER BY id DESC LIMIT 1`).
			Scan(&v.Version, &docs, &v.Author, &v.Time, &v.Action, &v.Comment)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := json.Unmarshal(docs, &v.Documents); err != nil {
			return fmt.Errorf("%w: documents of policy version %s: %v", ErrCorrupt, v.Version, err)
		}
		v.Time = v.Time.UTC()
		found = true
		return nil
	})
	if err != nil {
		return PolicyVersion{}, false, fmt.Errorf("store: read current policy: %w", err)
	}
	return v, found, nil
}

func (s *pgStore) Policies(ctx context.Context) ([]PolicyVersion, error) {
	var out []PolicyVersion
	err := s.pool.with(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT version, documents, author, time, action, comment FROM medgate_policies ORDER BY id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var v PolicyVersion
			var docs []byte
			if err := rows.Scan(&v.Version, &docs, &v.Author, &v.Time, &v.Action, &v.Comment); err != nil {
				return err
			}
			if err := json.Unmarshal(docs, &v.Documents); err != nil {
				return fmt.Errorf("%w: documents of policy version %s: %v", ErrCorrupt, v.Version, err)
			}
			v.Time = v.Time.UTC()
			out = append(out, v)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: read policies: %w", err)
	}
	return out, nil
}

func (s *pgStore) PutStatus(ctx context.Context, st NodeStatus) error {
	if err := validateStatus(st); err != nil {
		return err
	}
	if s.readOnly {
		return ErrReadOnly
	}
	if st.Updated.IsZero() {
		st.Updated = now(s.deps)
	}
	err := s.pool.with(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `INSERT INTO medgate_node_status (node, replica, connected, acked, nacked, nack_reason, updated)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (node) DO UPDATE SET replica = excluded.replica, connected = excluded.connected, acked = excluded.acked,
				nacked = excluded.nacked, nack_reason = excluded.nack_reason, updated = excluded.updated`,
			st.Node, st.Replica, st.Connected, st.Acked, st.Nacked, st.NackReason, st.Updated.UTC().Truncate(time.Microsecond))
		return err
	})
	if err != nil {
		return fmt.Errorf("store: upsert status of %s: %w", st.Node, err)
	}
	return nil
}

func (s *pgStore) Statuses(ctx context.Context) ([]NodeStatus, error) {
	var out []NodeStatus
	err := s.pool.with(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT node, replica, connected, acked, nacked, nack_reason, updated FROM medgate_node_status ORDER BY node`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var st NodeStatus
			if err := rows.Scan(&st.Node, &st.Replica, &st.Connected, &st.Acked, &st.Nacked, &st.NackReason, &st.Updated); err != nil {
				return err
			}
			st.Updated = st.Updated.UTC()
			out = append(out, st)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: read statuses: %w", err)
	}
	return out, nil
}

// Close signs the head if it moved past the last checkpoint, then closes
// the connections.
func (s *pgStore) Close() error {
	if s.pool.isClosed() {
		return nil
	}
	var err error
	if !s.readOnly {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = s.pool.with(ctx, func(c *pgx.Conn) error {
			return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
				var idx, signed int64
				var hash []byte
				if err := tx.QueryRow(ctx, `SELECT idx, hash FROM medgate_chain_head FOR UPDATE`).Scan(&idx, &hash); err != nil {
					return fmt.Errorf("store: lock chain head: %w", err)
				}
				if err := tx.QueryRow(ctx, `SELECT coalesce(max(idx), 0) FROM medgate_checkpoints`).Scan(&signed); err != nil {
					return fmt.Errorf("store: read checkpoints: %w", err)
				}
				if idx <= signed {
					return nil
				}
				return s.insertCheckpoint(ctx, tx, uint64(idx), hash)
			})
		})
		cancel()
	}
	s.pool.close()
	return err
}

// connPool is a small pool of connections: at most max in use, idle ones
// kept for reuse. A connection that broke or was left inside a
// transaction is closed instead of reused.
type connPool struct {
	cfg    *pgx.ConnConfig
	slots  chan struct{}
	mu     sync.Mutex
	idle   []*pgx.Conn
	closed bool
}

func newConnPool(cfg *pgx.ConnConfig, max int) *connPool {
	return &connPool{cfg: cfg, slots: make(chan struct{}, max)}
}

func (p *connPool) with(ctx context.Context, fn func(*pgx.Conn) error) error {
	c, err := p.acquire(ctx)
	if err != nil {
		return err
	}
	defer p.release(c)
	return fn(c)
}

func (p *connPool) acquire(ctx context.Context) (*pgx.Conn, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.slots
		return nil, ErrClosed
	}
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	c, err := pgx.ConnectConfig(ctx, p.cfg)
	if err != nil {
		<-p.slots
		return nil, fmt.Errorf("store: connect to PostgreSQL: %w", err)
	}
	return c, nil
}

func (p *connPool) release(c *pgx.Conn) {
	reuse := !c.IsClosed() && c.PgConn().TxStatus() == 'I'
	p.mu.Lock()
	if reuse && !p.closed {
		p.idle = append(p.idle, c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		closeConn(c)
	}
	<-p.slots
}

func (p *connPool) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

func (p *connPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		closeConn(c)
	}
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.Close(ctx)
}
