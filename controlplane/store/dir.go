package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/medgate/medgate/crypto/keys"
)

// File names inside an embedded store's directory.
const (
	lockFile        = "LOCK"
	eventsFile      = "events.log"
	checkpointsFile = "checkpoints.log"
	policiesFile    = "policies.log"
	statusFile      = "status.log"
)

// dirStore is the embedded store: append-only block files in one
// directory, written by one process at a time.
type dirStore struct {
	dir      string
	cfg      Config
	deps     Deps
	readOnly bool

	lock        *os.File // held with flock while writable
	events      *os.File
	checkpoints *os.File
	policies    *os.File
	status      *os.File

	mu          sync.Mutex // guards the fields below
	err         error      // sticky: a failed write leaves the store unusable
	closed      bool
	hw          map[string]uint64 // per source, including queued events
	durableHW   map[string]uint64 // per source, durable events only
	chain       *chainer          // head including queued events
	queued      uint64            // count of Appends queued
	pending     []pendingChunk    // encoded but not yet written
	durable     uint64            // queued count made durable
	durableIdx  uint64            // head made durable
	durableHash []byte
	eventsSize  int64 // bytes of events.log that are durable
	lastCP      uint64
	nodes       map[string]NodeStatus
	current     *PolicyVersion // last of the policy history; writable only

	commitMu sync.Mutex // held while writing and syncing events.log
	cpMu     sync.Mutex // held while writing checkpoints.log
	polMu    sync.Mutex // held while writing policies.log
	stMu     sync.Mutex // held while writing status.log
	cpSize   int64
	polSize  int64
	stSize   int64
	stBlocks int
}

// entryOverhead bounds the bytes an entry takes beyond its source and
// record (see appendEntry).
const entryOverhead = 3*8 + 4*binary.MaxVarintLen64 + 2*HashSize

type pendingChunk struct {
	payload []byte // blockHeader bytes of room, then the entries payload, kind byte included
	index   uint64 // head after this chunk
	hash    []byte
	marks   []mark // highest Seq per source in this chunk
}

type mark struct {
	source string
	seq    uint64
}

var _ Store = (*dirStore)(nil)

func openDir(dir string, cfg Config, deps Deps) (_ *dirStore, err error) {
	if dir == "" {
		return nil, errors.New("store: empty directory path")
	}
	s := &dirStore{dir: dir, cfg: cfg, deps: deps, readOnly: deps.Signer == nil}
	if s.readOnly {
		fi, err := os.Stat(dir)
		if err != nil {
			return nil, fmt.Errorf("store: open %s read-only: %w", dir, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("store: %s is not a directory", dir)
		}
		return s, nil
	}
	defer func() {
		if err != nil {
			s.closeFiles()
		}
	}()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	s.lock, err = os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open lock file: %w", err)
	}
	if err := lockExclusive(s.lock); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrLocked, dir, err)
	}
	for _, f := range []struct {
		name string
		fp   **os.File
	}{{eventsFile, &s.events}, {checkpointsFile, &s.checkpoints}, {policiesFile, &s.policies}, {statusFile, &s.status}} {
		if *f.fp, err = os.OpenFile(filepath.Join(dir, f.name), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
			return nil, fmt.Errorf("store: open %s: %w", f.name, err)
		}
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	if err := s.recoverEvents(); err != nil {
		return nil, err
	}
	if err := s.recoverCheckpoints(); err != nil {
		return nil, err
	}
	if s.polSize, err = s.recoverFile(s.policies, policiesFile, func(p []byte) error {
		v, err := decodeJSON[PolicyVersion](p, kindPolicy)
		if err != nil {
			return err
		}
		s.current = &v
		return nil
	}); err != nil {
		return nil, err
	}
	if err := s.recoverStatus(); err != nil {
		return nil, err
	}
	return s, nil
}

// recoverFile reads every block of f, truncating a torn last block, and
// calls fn for each payload. Damage followed by valid blocks is not a torn
// write: it fails with a *CorruptError and nothing is truncated.
func (s *dirStore) recoverFile(f *os.File, name string, fn func([]byte) error) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("store: stat %s: %w", name, err)
	}
	br := &blockReader{r: f, limit: fi.Size()}
	for {
		p, err := br.next()
		if err == io.EOF {
			return br.off, nil
		}
		if errors.Is(err, errBadBlock) {
			next, rerr := br.resync(br.off)
			if rerr != nil {
				return 0, fmt.Errorf("store: read %s: %w", name, rerr)
			}
			if next >= 0 {
				return 0, fmt.Errorf("store: %s: %w; valid blocks follow, so this is not a torn write: inspect it with a read-only open and Verify",
					name, &CorruptError{File: name, Regions: []Region{{br.off, next - br.off}}})
			}
			s.deps.Logger.Warn("store: truncating torn tail left by an interrupted write",
				slog.String("file", filepath.Join(s.dir, name)), slog.Int64("offset", br.off), slog.Int64("bytes", br.limit-br.off))
			if err := f.Truncate(br.off); err != nil {
				return 0, fmt.Errorf("store: truncate torn tail of %s: %w", name, err)
			}
			if err := f.Sync(); err != nil {
				return 0, fmt.Errorf("store: sync %s: %w", name, err)
			}
			return br.off, nil
		}
		if err != nil {
			return 0, fmt.Errorf("store: read %s: %w", name, err)
		}
		if fn != nil {
			if err := fn(p); err != nil {
				return 0, fmt.Errorf("store: %s at offset %d: %w", name, br.off, err)
			}
		}
	}
}

func (s *dirStore) recoverEvents() error {
	s.hw = make(map[string]uint64)
	s.durableHW = make(map[string]uint64)
	var last *Entry
	size, err := s.recoverFile(s.events, eventsFile, func(p []byte) error {
		es, err := decodeEntries(p)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		for i := range es {
			if es[i].Seq > s.hw[es[i].Source] {
				s.hw[es[i].Source] = es[i].Seq
			}
		}
		if len(es) > 0 {
			e := es[len(es)-1]
			last = &e
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.eventsSize = size
	for k, v := range s.hw {
		s.durableHW[k] = v
	}
	if last == nil {
		s.chain = newChainer(0, nil)
	} else {
		s.chain = newChainer(last.Index, last.Hash)
	}
	s.durableIdx, s.durableHash = s.chain.index, slices.Clone(s.chain.hash)
	return nil
}

func (s *dirStore) recoverCheckpoints() error {
	var err error
	s.cpSize, err = s.recoverFile(s.checkpoints, checkpointsFile, func(p []byte) error {
		c, err := decodeCheckpoint(p)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		s.lastCP = max(s.lastCP, c.Index)
		return nil
	})
	return err
}

func (s *dirStore) recoverStatus() error {
	s.nodes = make(map[string]NodeStatus)
	var err error
	s.stSize, err = s.recoverFile(s.status, statusFile, func(p []byte) error {
		st, err := decodeJSON[NodeStatus](p, kindStatus)
		if err != nil {
			return err
		}
		s.nodes[st.Node] = st
		s.stBlocks++
		return nil
	})
	if err != nil {
		return err
	}
	if s.stBlocks > 2*len(s.nodes)+64 {
		return s.compactStatus()
	}
	return nil
}

// compactStatus rewrites status.log with one block per node.
func (s *dirStore) compactStatus() error {
	var buf []byte
	for _, n := range slices.Sorted(mapKeys(s.nodes)) {
		p, err := encodeJSON(kindStatus, s.nodes[n])
		if err != nil {
			return err
		}
		buf = appendBlock(buf, p)
	}
	tmp := filepath.Join(s.dir, statusFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("store: compact status: %w", err)
	}
	if _, err := f.Write(buf); err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("store: compact status: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, statusFile)); err != nil {
		f.Close()
		return fmt.Errorf("store: compact status: %w", err)
	}
	s.status.Close()
	s.status, s.stSize, s.stBlocks = f, int64(len(buf)), len(s.nodes)
	return syncDir(s.dir)
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func encodeJSON(kind byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("store: encode: %w", err)
	}
	return append([]byte{kind}, b...), nil
}

func decodeJSON[T any](p []byte, kind byte) (T, error) {
	var v T
	if len(p) == 0 || p[0] != kind {
		return v, fmt.Errorf("%w: block of kind %q where %q was expected", ErrCorrupt, firstByte(p), kind)
	}
	if err := json.Unmarshal(p[1:], &v); err != nil {
		return v, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return v, nil
}

func firstByte(p []byte) byte {
	if len(p) == 0 {
		return 0
	}
	return p[0]
}

func syncDir(dir string) error {
	if err := keys.SyncDir(dir); err != nil {
		return fmt.Errorf("store: sync directory: %w", err)
	}
	return nil
}

func (s *dirStore) writable() error {
	if s.readOnly {
		return ErrReadOnly
	}
	if s.closed {
		return ErrClosed
	}
	return s.err
}

func (s *dirStore) Append(ctx context.Context, events []Event) error {
	size := blockHeader + 1
	for i, e := range events {
		if _, err := validate(i, e, false); err != nil {
			return err
		}
		size += entryOverhead + len(e.Source) + len(e.Record)
	}
	if size-blockHeader > maxBlock {
		return fmt.Errorf("%w: batch of %d events takes more than %d bytes: split it", ErrInvalidEvent, len(events), maxBlock)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if err := s.writable(); err != nil {
		s.mu.Unlock()
		return err
	}
	fresh := dedup(events, func(src string) uint64 { return s.hw[src] }, func(src string, seq uint64) { s.hw[src] = seq })
	if len(fresh) > 0 {
		received := now(s.deps)
		p := make([]byte, blockHeader, size)
		p = append(p, kindEntries)
		var marks []mark
		for _, ev := range fresh {
			e := s.chain.next(ev, received)
			p = appendEntry(p, &e)
			if i := slices.IndexFunc(marks, func(m mark) bool { return m.source == ev.Source }); i >= 0 {
				marks[i].seq = ev.Seq
			} else {
				marks = append(marks, mark{ev.Source, ev.Seq})
			}
		}
		s.queued++
		s.pending = append(s.pending, pendingChunk{payload: p, index: s.chain.index, hash: s.chain.hash, marks: marks})
	}
	target := s.queued
	s.mu.Unlock()
	if err := s.commit(target); err != nil {
		return err
	}
	if len(fresh) > 0 {
		if err := s.maybeCheckpoint(); err != nil {
			s.deps.Logger.Error("store: periodic checkpoint failed", slog.Any("err", err))
		}
	}
	return nil
}

// commit makes every chunk queued up to target durable. Whoever holds
// commitMu writes all chunks pending at that moment as one block and syncs
// once, so concurrent Appends share an fsync.
func (s *dirStore) commit(target uint64) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	if s.durable >= target || s.err != nil {
		err := s.err
		s.mu.Unlock()
		return err
	}
	chunks, upto, off := s.pending, s.queued, s.eventsSize
	s.pending = nil
	s.mu.Unlock()

	fail := func(err error) error {
		err = fmt.Errorf("store: write %s: %w", eventsFile, err)
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		return err
	}
	for len(chunks) > 0 {
		// One block per write and fsync, so only the last block can tear.
		// A lone chunk (the usual case) is framed in place.
		b := chunks[0].payload
		n := 1
		for n < len(chunks) && len(b)+len(chunks[n].payload)-blockHeader-1 <= blockHeader+maxBlock {
			if n == 1 {
				b = slices.Clone(b)
			}
			b = append(b, chunks[n].payload[blockHeader+1:]...)
			n++
		}
		if len(b)-blockHeader > maxBlock {
			return fail(fmt.Errorf("batch of %d bytes exceeds the block limit %d", len(b)-blockHeader, maxBlock))
		}
		frameInPlace(b)
		if _, err := s.events.WriteAt(b, off); err != nil {
			return fail(err)
		}
		if err := s.events.Sync(); err != nil {
			return fail(err)
		}
		off += int64(len(b))
		last := chunks[n-1]
		s.mu.Lock()
		s.eventsSize = off
		s.durableIdx, s.durableHash = last.index, last.hash
		for _, c := range chunks[:n] {
			for _, m := range c.marks {
				s.durableHW[m.source] = max(s.durableHW[m.source], m.seq)
			}
		}
		s.mu.Unlock()
		chunks = chunks[n:]
	}
	s.mu.Lock()
	s.durable = upto
	s.mu.Unlock()
	return nil
}

func (s *dirStore) maybeCheckpoint() error {
	if s.cfg.CheckpointEvery <= 0 {
		return nil
	}
	n := uint64(s.cfg.CheckpointEvery)
	s.cpMu.Lock()
	defer s.cpMu.Unlock()
	s.mu.Lock()
	idx, last := s.durableIdx, s.lastCP
	s.mu.Unlock()
	if idx/n <= last/n {
		return nil
	}
	return s.checkpointLocked()
}

func (s *dirStore) Checkpoint(ctx context.Context) error {
	s.mu.Lock()
	err := s.writable()
	target := s.queued
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := s.commit(target); err != nil {
		return err
	}
	s.cpMu.Lock()
	defer s.cpMu.Unlock()
	return s.checkpointLocked()
}

// checkpointLocked signs the durable head; cpMu is held.
func (s *dirStore) checkpointLocked() error {
	s.mu.Lock()
	idx, hash := s.durableIdx, s.durableHash
	s.mu.Unlock()
	c := signCheckpoint(s.deps.Signer, idx, hash, now(s.deps))
	b := appendBlock(nil, appendCheckpoint(nil, &c))
	if _, err := s.checkpoints.WriteAt(b, s.cpSize); err != nil {
		return fmt.Errorf("store: write checkpoint: %w", err)
	}
	if err := s.checkpoints.Sync(); err != nil {
		return fmt.Errorf("store: sync checkpoint: %w", err)
	}
	s.cpSize += int64(len(b))
	s.mu.Lock()
	s.lastCP = max(s.lastCP, idx)
	s.mu.Unlock()
	return nil
}

func (s *dirStore) HighWater(ctx context.Context, source string) (uint64, error) {
	if !s.readOnly {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return 0, ErrClosed
		}
		return s.durableHW[source], nil
	}
	var hw uint64
	err := s.Scan(ctx, Filter{Source: source}, func(e Entry) error {
		hw = max(hw, e.Seq)
		return nil
	})
	return hw, err
}

func (s *dirStore) Query(ctx context.Context, f Filter) ([]Entry, error) {
	return collect(ctx, s, f)
}

// openForRead returns a reader of name and the size up to which its
// blocks are complete (writable store) or the current size (read-only).
func (s *dirStore) openForRead(name string) (io.ReaderAt, int64, func(), error) {
	if !s.readOnly {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return nil, 0, nil, ErrClosed
		}
		switch name {
		case eventsFile:
			return s.events, s.eventsSize, func() {}, nil
		}
	}
	f, err := os.Open(filepath.Join(s.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return bytes.NewReader(nil), 0, func() {}, nil
	}
	if err != nil {
		return nil, 0, nil, fmt.Errorf("store: open %s: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, nil, fmt.Errorf("store: stat %s: %w", name, err)
	}
	return f, fi.Size(), func() { f.Close() }, nil
}

// readBlocks calls fn for each block of name. Damage between valid blocks
// is skipped and reported as a *CorruptError at the end. Damage at the end
// is taken as a write in progress (or a torn tail a writer will truncate)
// and ends the read quietly.
func (s *dirStore) readBlocks(ctx context.Context, name string, fn func([]byte) error) error {
	r, limit, done, err := s.openForRead(name)
	if err != nil {
		return err
	}
	defer done()
	br := &blockReader{r: r, limit: limit}
	var bad []Region
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := br.next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, errBadBlock) {
			next, rerr := br.resync(br.off)
			if rerr != nil {
				return fmt.Errorf("store: read %s: %w", name, rerr)
			}
			if next < 0 {
				break
			}
			bad = append(bad, Region{br.off, next - br.off})
			br.off = next
			continue
		}
		if err != nil {
			return fmt.Errorf("store: read %s: %w", name, err)
		}
		if err := fn(p); err != nil {
			if errors.Is(err, ErrCorrupt) {
				bad = append(bad, Region{br.off - int64(len(p)) - blockHeader, int64(len(p)) + blockHeader})
				continue
			}
			return err
		}
	}
	if len(bad) > 0 {
		return &CorruptError{File: name, Regions: bad}
	}
	return nil
}

// errStop ends a scan early without an error.
var errStop = errors.New("stop")

func (s *dirStore) Scan(ctx context.Context, f Filter, fn func(Entry) error) error {
	n := 0
	err := s.readBlocks(ctx, eventsFile, func(p []byte) error {
		es, err := decodeEntries(p)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		for _, e := range es {
			if f.Source != "" && e.Source != f.Source {
				continue
			}
			if f.needsRecord() {
				r, err := extract(e.Record)
				if err != nil || !f.match(e.Source, &r) {
					continue
				}
			}
			if err := fn(e); err != nil {
				return err
			}
			n++
			if f.Limit > 0 && n >= f.Limit {
				return errStop
			}
		}
		return nil
	})
	if err == errStop {
		return nil
	}
	return err
}

func (s *dirStore) Checkpoints(ctx context.Context) ([]Checkpoint, error) {
	var out []Checkpoint
	err := s.readBlocks(ctx, checkpointsFile, func(p []byte) error {
		c, err := decodeCheckpoint(p)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

func (s *dirStore) PutPolicy(ctx context.Context, v PolicyVersion) error {
	if err := validatePolicy(v); err != nil {
		return err
	}
	if v.Time.IsZero() {
		v.Time = now(s.deps)
	}
	v.Time = v.Time.UTC().Truncate(time.Microsecond)
	p, err := encodeJSON(kindPolicy, v)
	if err != nil {
		return err
	}
	s.mu.Lock()
	err = s.writable()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.polMu.Lock()
	defer s.polMu.Unlock()
	b := appendBlock(nil, p)
	if _, err := s.policies.WriteAt(b, s.polSize); err != nil {
		return fmt.Errorf("store: write policy: %w", err)
	}
	if err := s.policies.Sync(); err != nil {
		return fmt.Errorf("store: sync policy: %w", err)
	}
	s.polSize += int64(len(b))
	s.mu.Lock()
	s.current = &v
	s.mu.Unlock()
	return nil
}

// CurrentPolicy answers from memory in the writer, which is the only
// process that adds to the history; a read-only store reads the file.
func (s *dirStore) CurrentPolicy(ctx context.Context) (PolicyVersion, bool, error) {
	if !s.readOnly {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return PolicyVersion{}, false, ErrClosed
		}
		if s.current == nil {
			return PolicyVersion{}, false, nil
		}
		v := *s.current
		v.Documents = slices.Clone(v.Documents)
		return v, true, nil
	}
	hist, err := s.Policies(ctx)
	if err != nil || len(hist) == 0 {
		return PolicyVersion{}, false, err
	}
	return hist[len(hist)-1], true, nil
}

func (s *dirStore) Policies(ctx context.Context) ([]PolicyVersion, error) {
	var out []PolicyVersion
	err := s.readBlocks(ctx, policiesFile, func(p []byte) error {
		v, err := decodeJSON[PolicyVersion](p, kindPolicy)
		if err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

// PutStatus writes without fsync: status is soft state, rebuilt as
// sidecars reconnect, so a machine crash may lose the last updates (a
// process crash loses nothing).
func (s *dirStore) PutStatus(ctx context.Context, st NodeStatus) error {
	if err := validateStatus(st); err != nil {
		return err
	}
	if st.Updated.IsZero() {
		st.Updated = now(s.deps)
	}
	st.Updated = st.Updated.UTC().Truncate(time.Microsecond)
	p, err := encodeJSON(kindStatus, st)
	if err != nil {
		return err
	}
	s.mu.Lock()
	err = s.writable()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.stMu.Lock()
	defer s.stMu.Unlock()
	b := appendBlock(nil, p)
	if _, err := s.status.WriteAt(b, s.stSize); err != nil {
		return fmt.Errorf("store: write status: %w", err)
	}
	s.stSize += int64(len(b))
	s.stBlocks++
	s.mu.Lock()
	s.nodes[st.Node] = st
	s.mu.Unlock()
	return nil
}

func (s *dirStore) Statuses(ctx context.Context) ([]NodeStatus, error) {
	nodes := make(map[string]NodeStatus)
	if !s.readOnly {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		for k, v := range s.nodes {
			nodes[k] = v
		}
		s.mu.Unlock()
	} else {
		err := s.readBlocks(ctx, statusFile, func(p []byte) error {
			st, err := decodeJSON[NodeStatus](p, kindStatus)
			if err != nil {
				return err
			}
			nodes[st.Node] = st
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	out := make([]NodeStatus, 0, len(nodes))
	for _, k := range slices.Sorted(mapKeys(nodes)) {
		out = append(out, nodes[k])
	}
	return out, nil
}

func (s *dirStore) Close() error {
	if s.readOnly {
		return nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	target, broken := s.queued, s.err
	s.mu.Unlock()
	var errs []error
	if broken == nil {
		if err := s.commit(target); err != nil {
			errs = append(errs, err)
		} else {
			s.cpMu.Lock()
			s.mu.Lock()
			grew := s.durableIdx > s.lastCP
			s.mu.Unlock()
			if grew {
				errs = append(errs, s.checkpointLocked())
			}
			s.cpMu.Unlock()
		}
	}
	s.commitMu.Lock()
	s.cpMu.Lock()
	s.polMu.Lock()
	s.stMu.Lock()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if err := s.status.Sync(); err != nil {
		errs = append(errs, fmt.Errorf("store: sync status: %w", err))
	}
	errs = append(errs, s.closeFiles())
	s.stMu.Unlock()
	s.polMu.Unlock()
	s.cpMu.Unlock()
	s.commitMu.Unlock()
	return errors.Join(errs...)
}

func (s *dirStore) closeFiles() error {
	var errs []error
	for _, f := range []*os.File{s.events, s.checkpoints, s.policies, s.status, s.lock} {
		if f != nil {
			if err := f.Close(); err != nil && !strings.Contains(err.Error(), "already closed") {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
