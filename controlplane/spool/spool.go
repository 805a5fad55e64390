package spool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/medgate/medgate/crypto/keys"
)

// Defaults and bounds of Options.
const (
	DefaultMaxBytes     = 256 << 20
	DefaultSegmentBytes = 8 << 20
	MinSegmentBytes     = 4 << 10
)

const (
	lockName  = "lock"
	tmpPrefix = ".tmp-"
	segSuffix = ".seg"
)

// Errors a caller can branch on; test with errors.Is.
var (
	// ErrFull means Append in FailClosed mode found no room: nothing was
	// stored, and the caller should refuse the traffic the event describes.
	ErrFull = errors.New("spool: full")

	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("spool: closed")

	// ErrTooLarge means a record is larger than MaxRecordSize, or than
	// what fits in one segment.
	ErrTooLarge = errors.New("spool: record too large")

	// ErrCorrupt means a segment or the state file was changed or damaged.
	// Segment damage comes as a *CorruptError, which says where.
	ErrCorrupt = errors.New("spool: corrupt")

	// ErrUnsafePermissions means the spool directory or a file in it can
	// be accessed by group or others. It is the keyring's error: one check
	// guards every private file.
	ErrUnsafePermissions = keys.ErrUnsafePermissions

	// ErrLocked means another process has the spool open.
	ErrLocked = errors.New("spool: in use by another process")
)

// CorruptError reports a segment that failed its checks somewhere other
// than a torn tail (see the package documentation). It wraps ErrCorrupt.
// Open refuses to start over it: skipping it would lose records silently.
type CorruptError struct {
	Path   string // the segment file
	Offset int64  // where the bad record starts; -1 when the header is bad
	Seq    uint64 // the seq the bad record should hold; 0 when the header is bad
	Reason string // what failed
}

func (e *CorruptError) Error() string {
	dir := filepath.Dir(e.Path)
	if e.Offset < 0 {
		return fmt.Sprintf("spool: segment %s: %s; the file was changed or damaged and none of its records can be read: "+
			"move it out of %s, then open the spool again (its records are lost)", e.Path, e.Reason, dir)
	}
	return fmt.Sprintf("spool: segment %s: %s at offset %d (seq %d); the file was changed or damaged: "+
		"truncate it to %d bytes to keep the records before seq %d, or move it out of %s to drop all of its records, "+
		"then open the spool again", e.Path, e.Reason, e.Offset, e.Seq, e.Offset, e.Seq, dir)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// KeyError reports a segment whose data key the keyring cannot unwrap,
// typically because the KEK named by KeyID was retired while the segment
// still held unacknowledged records. It wraps the keyring's error
// (keys.ErrKeyRetired, keys.ErrKeyUnavailable, keys.ErrUnwrap).
type KeyError struct {
	Path  string // the segment file
	KeyID string // the KEK its data key is wrapped under
	Err   error
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("spool: segment %s: its data key is wrapped under %s, which the keyring cannot unwrap (%v): "+
		"restore that key to the keyring, or move the file out of %s to drop its records, then open the spool again",
		e.Path, e.KeyID, e.Err, filepath.Dir(e.Path))
}

func (e *KeyError) Unwrap() error { return e.Err }

// Record is one spooled event.
type Record struct {
	Seq  uint64
	Time time.Time // when Append stored it, by Options.Now
	Data []byte
}

// FullMode says what Append does when the spool has no room.
type FullMode int

const (
	// FailClosed (the zero value) stores nothing and returns ErrFull.
	FailClosed FullMode = iota
	// DropOldest deletes the oldest segment, with its unacknowledged
	// records, until the record fits; Dropped counts what was lost.
	DropOldest
)

// SyncPolicy says when Append returns.
type SyncPolicy int

const (
	// SyncCommit (the zero value) returns once the record is on stable
	// storage (fsync). Appends that arrive while one fsync runs share the
	// next one (group commit). The record survives a process kill, a
	// kernel crash and a power failure.
	SyncCommit SyncPolicy = iota
	// SyncWrite returns once the record is written to the file, without
	// fsync. It survives the process being killed, not a kernel crash or
	// a power failure: the last records written may then be lost, and
	// their seqs, which the control plane may already hold, handed out
	// again.
	SyncWrite
)

// Options configure a Spool. The zero value is usable.
type Options struct {
	// MaxBytes bounds the size of the segment files (a few hundred bytes
	// for the lock and state files come on top). Default DefaultMaxBytes;
	// at least twice SegmentBytes.
	MaxBytes int64

	// SegmentBytes is the size at which a segment file is closed and a
	// new one begun. Default DefaultSegmentBytes, or MaxBytes/4 if that
	// is smaller; at least MinSegmentBytes. A record must fit in one.
	SegmentBytes int64

	// Sync is when Append returns. Default SyncCommit.
	Sync SyncPolicy

	// Now is the clock for record times. Default time.Now.
	Now func() time.Time
}

func (o Options) resolve() (Options, error) {
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.SegmentBytes == 0 {
		o.SegmentBytes = max(MinSegmentBytes, min(DefaultSegmentBytes, o.MaxBytes/4))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	var errs []error
	if o.SegmentBytes < MinSegmentBytes {
		errs = append(errs, fmt.Errorf("spool: Options.SegmentBytes is %d, want at least %d", o.SegmentBytes, MinSegmentBytes))
	}
	if o.MaxBytes < 2*o.SegmentBytes {
		errs = append(errs, fmt.Errorf("spool: Options.MaxBytes is %d, want at least twice SegmentBytes (%d)", o.MaxBytes, 2*o.SegmentBytes))
	}
	if o.Sync != SyncCommit && o.Sync != SyncWrite {
		errs = append(errs, fmt.Errorf("spool: Options.Sync is %d, want SyncCommit or SyncWrite", o.Sync))
	}
	return o, errors.Join(errs...)
}

// Stats describe a spool at one moment.
type Stats struct {
	Pending int64     // unacknowledged records
	Bytes   int64     // size of the segment files
	Dropped uint64    // records DropOldest deleted since Open
	Oldest  time.Time // when the oldest unacknowledged record was appended, to within 32 records; zero if none
	Acked   uint64    // the ack watermark
	Last    uint64    // the highest seq handed out that Pending can return
}

// segment is one segment file. path, base, hdrLen and key never change;
// the rest is guarded by Spool.mu.
type segment struct {
	path    string
	base    uint64 // seq of its first record
	hdrLen  int64
	key     *segKey
	last    uint64 // seq of its last record, base-1 while empty
	size    int64  // bytes on disk and queued to be written
	durable int64  // bytes Pending may read
	marks   []mark
	f       *os.File // open for appending while it is the current segment
}

// markFor returns the mark to start reading at for seq, which the
// segment holds.
func (seg *segment) markFor(seq uint64) mark {
	i, found := slices.BinarySearchFunc(seg.marks, seq, func(m mark, s uint64) int { return cmp.Compare(m.seq, s) })
	if found {
		return seg.marks[i]
	}
	return seg.marks[i-1]
}

// cursor is where the last Pending call stopped, so the next one resumes
// without searching.
type cursor struct {
	seg *segment
	off int64
	seq uint64 // of the record at off
}

// Spool is an encrypted, durable queue of records on local disk. Append is
// safe for concurrent use; Pending, Wait and Ack are meant for one sender
// goroutine but are safe to call from several. Close releases the
// directory.
type Spool struct {
	dir  string
	kr   keys.Keyring
	ctx  context.Context // for the keyring, without Open's cancellation
	opt  Options
	lock io.Closer

	ackMu   sync.Mutex // serializes Ack and Close
	stateMu sync.Mutex // serializes state file writes; taken before mu
	perSeg  uint64     // most records one segment can hold

	mu       sync.Mutex
	cond     *sync.Cond // signalled when a flush or a rotation ends
	err      error      // sticky: a write failed, or ErrClosed
	closing  bool
	segs     []*segment // oldest first; cur, when set, is last
	cur      *segment
	next     uint64 // seq of the next record
	acked    uint64
	synced   uint64 // records up to this seq are durable (per Options.Sync)
	bytes    int64  // sum of segs' size
	hdrLen   int64  // length of the newest segment header, to foresee the next one's
	dropped  uint64
	buf      []byte // frames of cur waiting to be written
	spare    []byte
	scratch  []byte
	flushing bool
	rotating bool   // a new segment is being made, with mu released
	floor    uint64 // the next-seq floor in the state file
	waiting  bool   // notify was handed out by Wait
	notify   chan struct{}
	cursor   cursor
}

// Open opens the spool in dir, creating it (mode 0700) if needed. It
// refuses a directory, or a spool file in it, that group or others can
// access, and a spool another process has open. It checks every record,
// truncates a torn tail left by a crash, and fails with a *CorruptError or
// *KeyError (each saying what the operator can do) rather than skip
// records it cannot read. ctx bounds Open's own work only; the keyring is
// also called later, when Append begins a segment.
func Open(ctx context.Context, dir string, kr keys.Keyring, opt Options) (*Spool, error) {
	if kr == nil {
		return nil, errors.New("spool: no keyring")
	}
	opt, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: create directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("spool: %s is not a directory", dir)
	}
	if err := keys.CheckPrivate(dir, "spool directory", fi); err != nil {
		return nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Spool{
		dir: dir, kr: kr, ctx: context.WithoutCancel(ctx), opt: opt, lock: lock,
		notify: make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	s.perSeg = uint64(opt.SegmentBytes/frameLen(0)) + 1
	if err := s.recover(ctx); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

func segName(base uint64) string { return fmt.Sprintf("%016x%s", base, segSuffix) }

func parseSegName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	base, err := strconv.ParseUint(hex, 16, 64)
	return base, err == nil && segName(base) == name
}

// recover loads the spool's files into s.
func (s *Spool) recover(ctx context.Context) error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	var bases []uint64
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(s.dir, name)
		base, isSeg := parseSegName(name)
		switch {
		case strings.HasPrefix(name, tmpPrefix):
			// A segment or state file whose writing did not finish: never
			// renamed into place, so nothing refers to it.
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("spool: %w", err)
			}
			continue
		case isSeg || name == stateName || name == lockName:
		default:
			continue // not the spool's
		}
		fi, err := e.Info()
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("spool: %s is not a regular file", path)
		}
		if err := keys.CheckPrivate(path, "spool file", fi); err != nil {
			return err
		}
		if isSeg {
			bases = append(bases, base)
		}
	}
	slices.Sort(bases)

	st, err := readState(s.dir)
	if err != nil {
		return err
	}
	unwrap := func(keyID string, wrapped []byte) ([]byte, error) { return s.kr.Unwrap(ctx, keyID, wrapped) }
	next := max(st.next, st.acked+1)
	for i, base := range bases {
		seg, err := loadSegment(filepath.Join(s.dir, segName(base)), base, i == len(bases)-1, unwrap)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("spool: open: %w", ctx.Err())
			}
			return err
		}
		next = max(next, seg.base, seg.last+1)
		s.segs = append(s.segs, seg)
		s.bytes += seg.size
	}
	s.next, s.acked, s.synced = next, st.acked, next-1
	s.hdrLen = int64(maxHeaderLen)
	if len(s.segs) > 0 {
		s.hdrLen = s.segs[len(s.segs)-1].hdrLen
	}

	// Persist the next seq before deleting anything that also told it.
	if err := writeState(s.dir, state{acked: s.acked, next: s.next}); err != nil {
		return err
	}
	s.floor = s.next
	var errs []error
	s.segs = slices.DeleteFunc(s.segs, func(seg *segment) bool {
		if seg.last >= seg.base && seg.last > s.acked {
			return false
		}
		if err := os.Remove(seg.path); err != nil {
			errs = append(errs, fmt.Errorf("spool: %w", err))
			return false
		}
		s.bytes -= seg.size
		return true
	})
	return errors.Join(errs...)
}

// loadSegment checks the segment at path. In the newest segment a torn
// tail is cut off; anywhere else a bad record is an error.
func loadSegment(path string, base uint64, newest bool, unwrap unwrapFunc) (*segment, error) {
	flag := os.O_RDONLY
	if newest {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	size := fi.Size()
	sc, err := scanSegment(f, size, path, unwrap)
	if err != nil {
		return nil, err
	}
	if sc.hdr.base != base {
		return nil, &CorruptError{Path: path, Offset: -1,
			Reason: fmt.Sprintf("header says its first seq is %d, its name says %d", sc.hdr.base, base)}
	}
	if fe := sc.fail; fe != nil {
		torn := false
		if newest {
			if torn, err = isTorn(f, fe, size); err != nil {
				return nil, fmt.Errorf("spool: read %s: %w", path, err)
			}
		}
		if !torn {
			return nil, &CorruptError{Path: path, Offset: fe.off, Seq: fe.want, Reason: fe.reason()}
		}
		if err := f.Truncate(fe.off); err != nil {
			return nil, fmt.Errorf("spool: cut torn tail of %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("spool: cut torn tail of %s: %w", path, err)
		}
		size = fe.off
	}
	return &segment{
		path: path, base: base, hdrLen: int64(sc.hdr.len), key: sc.key,
		last: sc.last, size: size, durable: size, marks: sc.marks,
	}, nil
}

// isTorn tells a write cut short by a crash from damage. A crash leaves
// the tail of what was being written: the file ends inside a record, or
// the rest of the file from the bad record on (or after it) is zeros, as a
// file system leaves blocks it had allocated but not written. A record
// that fails its checks with data after it did not come from a crash.
func isTorn(ra io.ReaderAt, fe *frameError, size int64) (bool, error) {
	switch fe.kind {
	case failIncomplete:
		return true, nil
	case failHeader:
		return allZero(ra, fe.off, size)
	case failAuth:
		return allZero(ra, fe.end, size)
	}
	return false, nil
}

// Append stores data as the next record and returns its seq, once the
// record is durable as Options.Sync says. When the spool has no room,
// FailClosed (and any unknown mode) returns ErrFull and stores nothing;
// DropOldest deletes the oldest segments to make room. After a write
// error every Append fails with that error until the spool is closed and
// opened again. data is not retained.
func (s *Spool) Append(data []byte, mode FullMode) (uint64, error) {
	if len(data) > MaxRecordSize {
		return 0, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(data), MaxRecordSize)
	}
	flen := frameLen(len(data))
	s.mu.Lock()
	defer s.mu.Unlock()
	if flen+s.hdrLen > s.opt.SegmentBytes {
		return 0, fmt.Errorf("%w: %d bytes do not fit in a segment of %d (Options.SegmentBytes)",
			ErrTooLarge, len(data), s.opt.SegmentBytes)
	}
	for {
		if s.closing {
			return 0, ErrClosed
		}
		if s.err != nil {
			return 0, s.err
		}
		if s.rotating {
			s.cond.Wait()
			continue
		}
		cur := s.cur
		rotate := cur == nil || cur.size+flen > s.opt.SegmentBytes
		need := flen
		if rotate {
			if cur != nil && cur.size == cur.hdrLen { // the header turned out longer than expected
				return 0, fmt.Errorf("%w: %d bytes do not fit in a segment of %d (Options.SegmentBytes)",
					ErrTooLarge, len(data), s.opt.SegmentBytes)
			}
			need += s.hdrLen // the new segment's header, as long as the last one
		}
		if s.bytes+need > s.opt.MaxBytes {
			if mode != DropOldest {
				return 0, ErrFull
			}
			if err := s.dropOldest(); err != nil {
				return 0, err
			}
			continue
		}
		if rotate {
			if s.flushing || len(s.buf) > 0 {
				s.flushOrWait() // a segment is closed only once written out
				continue
			}
			if err := s.rotate(); err != nil {
				return 0, err
			}
			continue
		}
		break
	}
	cur := s.cur
	seq := s.next
	s.next++
	t := s.opt.Now()
	if (seq-cur.base)%markEvery == 0 {
		cur.marks = append(cur.marks, mark{seq: seq, off: cur.size, time: t.UnixNano()})
	}
	s.buf, s.scratch = cur.key.appendFrame(s.buf, s.scratch, seq, t, data)
	cur.size += flen
	cur.last = seq
	s.bytes += flen
	for s.synced < seq {
		if s.err != nil {
			return 0, s.err
		}
		s.flushOrWait()
	}
	return seq, nil
}

// flushOrWait writes what is queued, or waits for the write under way to
// end. s.mu is held.
func (s *Spool) flushOrWait() {
	if s.flushing {
		s.cond.Wait()
		return
	}
	s.flush()
}

// flush writes the queued frames to the current segment and syncs it,
// with s.mu released meanwhile so more Appends can queue for the next
// flush. s.mu is held and no flush is under way.
func (s *Spool) flush() {
	if len(s.buf) == 0 {
		return
	}
	seg, buf, upto, end := s.cur, s.buf, s.next-1, s.cur.size
	s.buf, s.spare = s.spare[:0], nil
	s.flushing = true
	s.mu.Unlock()
	_, err := seg.f.Write(buf)
	if err == nil && s.opt.Sync == SyncCommit {
		err = seg.f.Sync()
	}
	s.mu.Lock()
	s.flushing = false
	if cap(buf) <= 1<<20 {
		s.spare = buf[:0]
	}
	if err != nil {
		s.fail(fmt.Errorf("spool: write %s: %w; close the spool and open it again", seg.path, err))
		return
	}
	seg.durable = end
	s.synced = upto
	s.wake()
	s.cond.Broadcast()
}

// fail makes err stick and wakes everyone waiting. s.mu is held.
func (s *Spool) fail(err error) {
	if s.err == nil {
		s.err = err
	}
	s.waiting = true
	s.wake()
	s.cond.Broadcast()
}

// wake closes the channel Wait handed out. s.mu is held.
func (s *Spool) wake() {
	if s.waiting {
		close(s.notify)
		s.notify = make(chan struct{})
		s.waiting = false
	}
}

// rotate closes the current segment and begins a new one. s.mu is held
// and nothing is queued or being written; it is released while the files
// are written, and Appends wait meanwhile.
func (s *Spool) rotate() error {
	old, base := s.cur, s.next
	s.rotating = true
	s.mu.Unlock()
	var syncErr, err error
	if old != nil && s.opt.Sync == SyncWrite {
		// Only the newest segment may have a torn tail after a crash.
		syncErr = old.f.Sync()
	}
	var seg *segment
	if syncErr == nil {
		// Reserve every seq the new segment can hold before it holds any,
		// so that none is handed out twice even if the segment is lost.
		if err = s.saveState(0, base+s.perSeg, false); err == nil {
			seg, err = s.createSegment(base)
		}
	}
	s.mu.Lock()
	s.rotating = false
	s.cond.Broadcast()
	if syncErr != nil {
		s.fail(fmt.Errorf("spool: sync %s: %w; close the spool and open it again", old.path, syncErr))
		return s.err
	}
	if err != nil {
		return err
	}
	if old != nil {
		old.f.Close() // written and synced: a close error loses nothing
		old.f = nil
	}
	s.segs = append(s.segs, seg)
	s.cur = seg
	s.bytes += seg.size
	s.hdrLen = seg.hdrLen
	if old != nil && old.last <= s.acked && len(s.segs) > 1 && s.segs[len(s.segs)-2] == old {
		if err := os.Remove(old.path); err == nil {
			s.segs = slices.Delete(s.segs, len(s.segs)-2, len(s.segs)-1)
			s.bytes -= old.size
		}
	}
	return nil
}

// saveState writes the state file with the ack watermark raised to acked
// and the next-seq floor raised to floor; with exact, the floor becomes
// the next seq itself, which only Close may do. s.mu is not held.
func (s *Spool) saveState(acked, floor uint64, exact bool) error {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.mu.Lock()
	st := state{acked: max(acked, s.acked), next: max(floor, s.next, s.floor)}
	if exact {
		st.next = s.next
	}
	s.mu.Unlock()
	if err := writeState(s.dir, st); err != nil {
		return err
	}
	s.mu.Lock()
	s.floor = st.next
	s.mu.Unlock()
	return nil
}

// createSegment writes a new segment file holding only its header, under a
// new data key, and returns it open for appending.
func (s *Spool) createSegment(base uint64) (*segment, error) {
	dek, err := keys.NewDataKey()
	if err != nil {
		return nil, fmt.Errorf("spool: new segment: %w", err)
	}
	defer clear(dek)
	keyID, wrapped, err := s.kr.Wrap(s.ctx, dek)
	if err != nil {
		return nil, fmt.Errorf("spool: new segment: wrap data key: %w", err)
	}
	hdr, key, err := sealHeader(dek, base, keyID, wrapped)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(s.dir, segName(base))
	f, err := os.CreateTemp(s.dir, tmpPrefix+"seg-*")
	if err != nil {
		return nil, fmt.Errorf("spool: new segment: %w", err)
	}
	_, err = f.Write(hdr)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err == nil {
		err = keys.SyncDir(s.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("spool: new segment %s: %w", path, err)
	}
	n := int64(len(hdr))
	return &segment{path: path, base: base, hdrLen: n, key: key, last: base - 1, size: n, durable: n, f: f}, nil
}

// dropOldest deletes the oldest segment that is not the current one. s.mu
// is held.
func (s *Spool) dropOldest() error {
	if len(s.segs) == 0 || s.segs[0] == s.cur {
		return ErrFull // cannot happen: MaxBytes is at least two segments
	}
	seg := s.segs[0]
	if err := os.Remove(seg.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: drop oldest segment: %w", err)
	}
	if seg.last > s.acked {
		s.dropped += seg.last - max(seg.base, s.acked+1) + 1
	}
	s.segs = s.segs[1:]
	s.bytes -= seg.size
	return nil
}

// Pending returns up to n unacknowledged records with a seq above after,
// oldest first, reading them from disk. Records that DropOldest deleted
// are skipped. It returns a *CorruptError if a record fails its checks,
// which after Open means a file was changed under the running spool.
func (s *Spool) Pending(after uint64, n int) ([]Record, error) {
	if n <= 0 {
		return nil, nil
	}
	type span struct {
		seg      *segment
		off, end int64
		seq      uint64
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	from, last := max(after, s.acked)+1, s.synced
	var spans []span
	for _, seg := range s.segs {
		if seg.last < seg.base || seg.last < from {
			continue
		}
		if seg.base > last {
			break
		}
		seq := max(from, seg.base)
		m := seg.markFor(seq)
		sp := span{seg: seg, off: m.off, end: seg.durable, seq: m.seq}
		if c := s.cursor; c.seg == seg && c.seq <= seq && c.seq > m.seq {
			sp.off, sp.seq = c.off, c.seq
		}
		spans = append(spans, sp)
	}
	s.mu.Unlock()

	var out []Record
	var stop cursor
	for _, sp := range spans {
		if len(out) == n {
			break
		}
		f, err := os.Open(sp.seg.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // dropped or acknowledged since
		}
		if err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		fr := newFrameReader(f, sp.off, sp.end, sp.seg.key, sp.seq)
		for len(out) < n {
			var err error
			if fr.want < from {
				err = fr.skip()
			} else {
				var seq uint64
				var t int64
				var data []byte
				if seq, t, data, err = fr.next(true); err == nil {
					out = append(out, Record{Seq: seq, Time: time.Unix(0, t), Data: data})
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				f.Close()
				var fe *frameError
				if errors.As(err, &fe) {
					return nil, &CorruptError{Path: sp.seg.path, Offset: fe.off, Seq: fe.want, Reason: fe.reason()}
				}
				return nil, fmt.Errorf("spool: %s: %w", sp.seg.path, err)
			}
		}
		f.Close()
		stop = cursor{seg: sp.seg, off: fr.off, seq: fr.want}
	}
	if stop.seg != nil {
		s.mu.Lock()
		s.cursor = stop
		s.mu.Unlock()
	}
	return out, nil
}

// closedChan is returned by Wait when there is no need to wait.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Wait returns a channel that is closed once a record with a seq above
// after can be read with Pending, or the spool is closed. A sender loops:
// Pending, send, and when there is nothing new, Wait.
func (s *Spool) Wait(after uint64) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.synced > after || s.closing {
		return closedChan
	}
	s.waiting = true
	return s.notify
}

// Ack records that every record with a seq up to seq was delivered. The
// watermark is written to disk before Ack returns, and segments holding
// only delivered records are deleted (not shredded: their data keys die
// with them). Acking a seq at or below the watermark does nothing; acking
// one above the last durable record is an error.
func (s *Spool) Ack(seq uint64) error {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrClosed
	}
	if seq > s.synced {
		s.mu.Unlock()
		return fmt.Errorf("spool: ack of seq %d, but the last durable record is seq %d", seq, s.synced)
	}
	if seq <= s.acked {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()

	if err := s.saveState(seq, 0, false); err != nil {
		return err
	}

	s.mu.Lock()
	s.acked = seq
	var done []*segment
	for len(s.segs) > 0 && s.segs[0] != s.cur && s.segs[0].last <= seq {
		done = append(done, s.segs[0])
		s.bytes -= s.segs[0].size
		s.segs = s.segs[1:]
	}
	s.mu.Unlock()
	var errs []error
	for _, seg := range done {
		if err := os.Remove(seg.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("spool: delete delivered segment: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Dropped returns how many records DropOldest deleted since Open.
func (s *Spool) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Stats returns the spool's counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Bytes: s.bytes, Dropped: s.dropped, Acked: s.acked, Last: s.synced}
	for _, seg := range s.segs {
		if seg.last < seg.base || seg.last <= s.acked {
			continue
		}
		first := max(seg.base, s.acked+1)
		if st.Oldest.IsZero() {
			st.Oldest = time.Unix(0, seg.markFor(first).time)
		}
		st.Pending += int64(seg.last - first + 1)
	}
	return st
}

// Close writes out what is queued, closes the files and releases the
// directory. Appends waiting for their write complete; later calls fail
// with ErrClosed. It returns a write error that made the spool fail.
func (s *Spool) Close() error {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	for {
		if s.flushing || s.rotating {
			s.cond.Wait()
		} else if s.err == nil && len(s.buf) > 0 {
			s.flush()
		} else {
			break
		}
	}
	err := s.err
	if cur := s.cur; cur != nil && cur.f != nil {
		if err == nil && s.opt.Sync == SyncWrite {
			err = cur.f.Sync()
		}
		if cerr := cur.f.Close(); err == nil {
			err = cerr
		}
		cur.f = nil
	}
	s.mu.Unlock()
	if err == nil {
		// Nothing more will be appended: the floor can come down to the
		// next seq, so a clean restart does not skip the reserved ones.
		err = s.saveState(0, 0, true)
	}
	s.mu.Lock()
	s.fail(ErrClosed)
	s.mu.Unlock()
	if lerr := s.lock.Close(); err == nil {
		err = lerr
	}
	return err
}
