package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/medgate/medgate/crypto/keys"
)

// equalBytes compares record data whole: element by element is slow for
// large records, and an empty record may come back as nil.
var equalBytes = cmp.Comparer(bytes.Equal)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		sizes []int
		opt   Options
	}{
		{"typical events", []int{300, 600, 1500, 900}, smallOpts()},
		{"empty and tiny", []int{0, 1, 0, 2}, smallOpts()},
		{"larger than a read buffer", []int{100 << 10, 3, 200 << 10}, Options{Now: fixedClock}},
		{"many segments", func() []int {
			s := make([]int, 100)
			for i := range s {
				s[i] = 600
			}
			return s
		}(), smallOpts()},
		{"write without fsync", []int{600, 600, 600}, Options{Sync: SyncWrite, SegmentBytes: 4 << 10, Now: fixedClock}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t, spoolDir(t), newKeyring(t), tt.opt)
			var want []Record
			for i, n := range tt.sizes {
				data := payload(fmt.Sprintf("r%d", i), n)
				seq, err := s.Append(data, FailClosed)
				if err != nil {
					t.Fatalf("Append %d: %v", i, err)
				}
				want = append(want, Record{Seq: seq, Time: testNow, Data: data})
			}
			if diff := cmp.Diff(seqRange(1, uint64(len(tt.sizes))), seqsOf(want)); diff != "" {
				t.Errorf("seqs (-want +got):\n%s", diff)
			}
			got := pendingAll(t, s)
			if diff := cmp.Diff(want, got, equalBytes); diff != "" {
				t.Errorf("Pending (-want +got):\n%s", diff)
			}
			// Reading from the middle gives the rest.
			mid := uint64(len(want) / 2)
			got, err := s.Pending(mid, len(want))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want[mid:], got, equalBytes); diff != "" {
				t.Errorf("Pending(%d) (-want +got):\n%s", mid, diff)
			}
			st := s.Stats()
			if st.Pending != int64(len(want)) || st.Last != uint64(len(want)) || !st.Oldest.Equal(testNow) {
				t.Errorf("Stats = %+v", st)
			}
		})
	}
}

func TestRestartKeepsPendingAndSeqs(t *testing.T) {
	ctx := context.Background()
	kr := newKeyring(t)
	dir := spoolDir(t)

	s, err := Open(ctx, dir, kr, smallOpts())
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "a", 20, 600)
	if err := s.Ack(8); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(ctx, dir, kr, smallOpts())
	if err != nil {
		t.Fatal(err)
	}
	got := pendingAll(t, s)
	if diff := cmp.Diff(seqRange(9, 20), seqsOf(got)); diff != "" {
		t.Fatalf("pending after restart (-want +got):\n%s", diff)
	}
	if !bytes.Equal(got[0].Data, payload("a-8", 600)) {
		t.Errorf("record 9 holds %.20q", got[0].Data)
	}
	if seq, err := s.Append([]byte("b"), FailClosed); err != nil || seq != 21 {
		t.Fatalf("Append after restart = %d, %v; want 21", seq, err)
	}
	// Acknowledge everything: every segment but the current one goes.
	if err := s.Ack(21); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Open deletes the fully acknowledged segments that remain, and seqs
	// still continue from the state file alone.
	for round, want := range []uint64{22, 23} {
		s, err = Open(ctx, dir, kr, smallOpts())
		if err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.Pending != 0 || st.Acked != want-1 {
			t.Errorf("round %d: Stats = %+v", round, st)
		}
		if round == 0 {
			if files := segFiles(t, dir); len(files) != 0 {
				t.Errorf("segments left after everything was acknowledged: %q", files)
			}
		}
		seq, err := s.Append([]byte("c"), FailClosed)
		if err != nil || seq != want {
			t.Fatalf("round %d: Append = %d, %v; want %d", round, seq, err, want)
		}
		if err := s.Ack(seq); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSeqsReservedPerSegment loses the newest segment after a crash (the
// operator moved it aside, or cut it, after a CorruptError): seqs its
// records held, which the control plane may have stored, are not handed
// out again.
func TestSeqsReservedPerSegment(t *testing.T) {
	ctx := context.Background()
	kr := newKeyring(t)
	dir := spoolDir(t)
	s, err := Open(ctx, dir, kr, smallOpts())
	if err != nil {
		t.Fatal(err)
	}
	seqs := appendN(t, s, "a", 15, 600)
	s.lock.Close() // the process dies: no Close
	files := segFiles(t, dir)
	if err := os.Rename(files[len(files)-1], filepath.Join(filepath.Dir(dir), "aside.seg")); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, kr, smallOpts())
	seq, err := s.Append([]byte("b"), FailClosed)
	if err != nil {
		t.Fatal(err)
	}
	if last := seqs[len(seqs)-1]; seq <= last {
		t.Errorf("Append after losing the newest segment = seq %d, not above %d", seq, last)
	}
}

func TestAckDeletesSegments(t *testing.T) {
	dir := spoolDir(t)
	s := open(t, dir, newKeyring(t), smallOpts())
	appendN(t, s, "a", 60, 600)
	before := segFiles(t, dir)
	if len(before) < 5 {
		t.Fatalf("60 records in %d segments, want several", len(before))
	}

	lasts := map[string]uint64{}
	for _, path := range before {
		base, _ := parseSegName(filepath.Base(path))
		offs, _ := frameOffsets(t, path)
		lasts[path] = base + uint64(len(offs)) - 1
	}
	if err := s.Ack(25); err != nil {
		t.Fatal(err)
	}
	after := segFiles(t, dir)
	for _, path := range before {
		base, _ := parseSegName(filepath.Base(path))
		last := lasts[path]
		kept := len(after) > 0 && path >= after[0]
		if last <= 25 && kept {
			t.Errorf("%s holds seqs %d-%d, all acknowledged, and was kept", path, base, last)
		}
		if last > 25 && !kept {
			t.Errorf("%s holds seqs %d-%d and was deleted", path, base, last)
		}
	}
	if got := seqsOf(pendingAll(t, s)); !cmp.Equal(got, seqRange(26, 60)) {
		t.Errorf("pending = %v", got)
	}
	if st := s.Stats(); st.Bytes != dirBytes(t, dir) || st.Pending != 35 {
		t.Errorf("Stats = %+v; segment files hold %d bytes", st, dirBytes(t, dir))
	}

	if err := s.Ack(60); err != nil {
		t.Fatal(err)
	}
	if files := segFiles(t, dir); len(files) != 1 {
		t.Errorf("after acking all: %d segments, want the current one", len(files))
	}
	if err := s.Ack(10); err != nil {
		t.Errorf("Ack below the watermark: %v", err)
	}
	if err := s.Ack(61); err == nil {
		t.Error("Ack beyond the last record succeeded")
	}
}

// dirBytes sums the sizes of dir's segment files.
func dirBytes(t testing.TB, dir string) int64 {
	var n int64
	for _, path := range segFiles(t, dir) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

func TestFull(t *testing.T) {
	opt := Options{SegmentBytes: 4 << 10, MaxBytes: 16 << 10, Now: fixedClock}

	t.Run("FailClosed", func(t *testing.T) {
		ctx := context.Background()
		kr := newKeyring(t)
		dir := spoolDir(t)
		s, err := Open(ctx, dir, kr, opt)
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for {
			seq, err := s.Append(payload("x", 600), FailClosed)
			if errors.Is(err, ErrFull) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			n = seq
			if n > 100 {
				t.Fatal("16 KiB spool never filled")
			}
		}
		before := s.Stats()
		for range 3 {
			if _, err := s.Append(payload("y", 600), FailClosed); !errors.Is(err, ErrFull) {
				t.Fatalf("Append to a full spool: %v, want ErrFull", err)
			}
		}
		if after := s.Stats(); after != before {
			t.Errorf("ErrFull changed the spool: %+v, then %+v", before, after)
		}
		if before.Bytes > opt.MaxBytes || dirBytes(t, dir) > opt.MaxBytes {
			t.Errorf("spool holds %d bytes, MaxBytes is %d", dirBytes(t, dir), opt.MaxBytes)
		}
		if got := seqsOf(pendingAll(t, s)); !cmp.Equal(got, seqRange(1, n)) {
			t.Errorf("pending = %v, want 1-%d", got, n)
		}
		// Delivery makes room; no seq was used up by the refusals.
		if err := s.Ack(n / 2); err != nil {
			t.Fatal(err)
		}
		seq, err := s.Append(payload("z", 600), FailClosed)
		if err != nil || seq != n+1 {
			t.Fatalf("Append after ack = %d, %v; want %d", seq, err, n+1)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = open(t, dir, kr, opt)
		if got := seqsOf(pendingAll(t, s)); !cmp.Equal(got, seqRange(n/2+1, n+1)) {
			t.Errorf("pending after restart = %v", got)
		}
	})

	t.Run("DropOldest", func(t *testing.T) {
		dir := spoolDir(t)
		s := open(t, dir, newKeyring(t), opt)
		const total = 200
		for i := range total {
			if _, err := s.Append(payload(fmt.Sprint(i), 600), DropOldest); err != nil {
				t.Fatalf("Append %d: %v", i, err)
			}
			if n := dirBytes(t, dir); n > opt.MaxBytes {
				t.Fatalf("after %d appends the spool holds %d bytes, MaxBytes is %d", i+1, n, opt.MaxBytes)
			}
		}
		st := s.Stats()
		if st.Dropped == 0 || st.Dropped != s.Dropped() || uint64(st.Pending)+st.Dropped != total {
			t.Fatalf("Stats = %+v, want Pending+Dropped = %d", st, total)
		}
		got := pendingAll(t, s)
		if want := seqRange(total-uint64(st.Pending)+1, total); !cmp.Equal(seqsOf(got), want) {
			t.Errorf("pending = %v, want the newest %d", seqsOf(got), st.Pending)
		}
		if !bytes.Equal(got[len(got)-1].Data, payload(fmt.Sprint(total-1), 600)) {
			t.Error("newest record does not hold what was appended")
		}

	})

	t.Run("DropOldest counts only unacknowledged records", func(t *testing.T) {
		dir := spoolDir(t)
		s := open(t, dir, newKeyring(t), opt)
		for {
			before := s.Stats()
			if _, err := s.Append(payload("x", 600), FailClosed); errors.Is(err, ErrFull) {
				break
			} else if err != nil || before.Last > 100 {
				t.Fatalf("filling: %v", err)
			}
		}
		oldest := segFiles(t, dir)[0]
		offs, _ := frameOffsets(t, oldest)
		if err := s.Ack(2); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Append(payload("y", 600), DropOldest); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(oldest); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("oldest segment still there: %v", err)
		}
		if got, want := s.Dropped(), uint64(len(offs)-2); got != want {
			t.Errorf("Dropped = %d, want %d: the oldest segment held %d records, 2 acknowledged", got, want, len(offs))
		}
	})
}

func TestTooLarge(t *testing.T) {
	s := open(t, spoolDir(t), newKeyring(t), smallOpts())
	for _, n := range []int{5 << 10, MaxRecordSize + 1} {
		if _, err := s.Append(make([]byte, n), DropOldest); !errors.Is(err, ErrTooLarge) {
			t.Errorf("Append of %d bytes: %v, want ErrTooLarge", n, err)
		}
	}
	if seq, err := s.Append([]byte("fits"), FailClosed); err != nil || seq != 1 {
		t.Errorf("Append after refusals = %d, %v; want 1", seq, err)
	}
}

// TestTornTail cuts or spoils the end of the newest segment as a crash
// can, and expects Open to drop exactly the damaged tail.
func TestTornTail(t *testing.T) {
	const n = 10
	tests := []struct {
		name string
		tear func(b []byte, offs []int64) []byte
		keep int // records left
	}{
		{"cut inside the last record", func(b []byte, offs []int64) []byte { return b[:len(b)-5] }, n - 1},
		{"cut inside the last record's header", func(b []byte, offs []int64) []byte { return b[:offs[n-1]+7] }, n - 1},
		{"cut after the last record's header", func(b []byte, offs []int64) []byte { return b[:offs[n-1]+frameHeaderLen] }, n - 1},
		{"zeros after the last record", func(b []byte, offs []int64) []byte { return append(b, make([]byte, 4096)...) }, n},
		{"last two records zeroed", func(b []byte, offs []int64) []byte {
			clear(b[offs[n-2]:])
			return b
		}, n - 2},
		{"last record's body zeroed", func(b []byte, offs []int64) []byte {
			clear(b[offs[n-1]+frameHeaderLen:])
			return b
		}, n - 1},
		{"last record's body garbled", func(b []byte, offs []int64) []byte {
			b[len(b)-20] ^= 0x55
			return b
		}, n - 1},
		{"every record cut", func(b []byte, offs []int64) []byte { return b[:offs[0]+3] }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			kr := newKeyring(t)
			dir := spoolDir(t)
			s, err := Open(ctx, dir, kr, Options{Now: fixedClock})
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, s, "a", n, 600)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			files := segFiles(t, dir)
			if len(files) != 1 {
				t.Fatalf("%d segments", len(files))
			}
			offs, size := frameOffsets(t, files[0])
			rewrite(t, files[0], func(b []byte) []byte { return tt.tear(b, offs) })

			s, err = Open(ctx, dir, kr, Options{Now: fixedClock})
			if err != nil {
				t.Fatalf("Open after a torn write: %v", err)
			}
			got := pendingAll(t, s)
			if want := seqRange(1, uint64(tt.keep)); !cmp.Equal(seqsOf(got), want, cmpopts.EquateEmpty()) {
				t.Fatalf("pending = %v, want %v", seqsOf(got), want)
			}
			for i, r := range got {
				if !bytes.Equal(r.Data, payload(fmt.Sprintf("a-%d", i), 600)) {
					t.Errorf("seq %d does not hold what was appended", r.Seq)
				}
			}
			wantSize := size
			if tt.keep < n {
				wantSize = offs[tt.keep]
			}
			if tt.keep == 0 {
				if _, err := os.Stat(files[0]); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("segment left without records was kept: %v", err)
				}
			} else if fi, err := os.Stat(files[0]); err != nil || fi.Size() != wantSize {
				t.Errorf("segment after Open: %v, %v; want it cut to %d bytes", fi.Size(), err, wantSize)
			}
			// The spool goes on, and opens cleanly again.
			if _, err := s.Append([]byte("after"), FailClosed); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = open(t, dir, kr, Options{})
			if got := len(pendingAll(t, s)); got != tt.keep+1 {
				t.Errorf("second reopen: %d records, want %d", got, tt.keep+1)
			}
		})
	}
}

// TestTampered changes bytes that a crash cannot, and expects Open to
// refuse with an error that names the file and what to do.
func TestTampered(t *testing.T) {
	const n = 24 // four segments of 4 KiB, six records each
	tests := []struct {
		name   string
		file   int                                    // index into the segment files, from the end if negative
		change func(b []byte, offs []int64) (rec int) // returns the bad record's index, -1 for the header
		is     error
	}{
		{"record body in an old segment", 0, func(b []byte, offs []int64) int {
			b[offs[2]+40] ^= 1
			return 2
		}, ErrCorrupt},
		{"last record of an old segment", 0, func(b []byte, offs []int64) int {
			b[len(b)-1] ^= 1
			return len(offs) - 1
		}, ErrCorrupt},
		{"record body in the newest segment", -1, func(b []byte, offs []int64) int {
			b[offs[0]+frameHeaderLen+3] ^= 0x80
			return 0
		}, ErrCorrupt},
		{"seq field", -1, func(b []byte, offs []int64) int {
			b[offs[1]+11] ^= 1
			return 1
		}, ErrCorrupt},
		{"seq field with its checksum fixed", -1, func(b []byte, offs []int64) int {
			b[offs[1]+11] ^= 1
			fixFrameCRC(b, offs[1])
			return 1
		}, ErrCorrupt},
		{"length word with its checksum fixed", -1, func(b []byte, offs []int64) int {
			b[offs[0]+3] ^= 4
			fixFrameCRC(b, offs[0])
			return 0
		}, ErrCorrupt},
		{"records swapped", 1, func(b []byte, offs []int64) int {
			a := bytes.Clone(b[offs[1]:offs[2]])
			copy(b[offs[1]:], b[offs[2]:offs[3]])
			copy(b[offs[1]+offs[3]-offs[2]:], a)
			return 1
		}, ErrCorrupt},
		{"header seal", 0, func(b []byte, offs []int64) int {
			b[offs[0]-1] ^= 1
			return -1
		}, ErrCorrupt},
		{"header first seq", 1, func(b []byte, offs []int64) int {
			b[12] ^= 1
			return -1
		}, ErrCorrupt},
		{"wrapped key", 0, func(b []byte, offs []int64) int {
			b[offs[0]-30] ^= 1
			return -1
		}, keys.ErrUnwrap},
		{"magic", -1, func(b []byte, offs []int64) int {
			b[0] = 'X'
			return -1
		}, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			kr := newKeyring(t)
			dir := spoolDir(t)
			s, err := Open(ctx, dir, kr, smallOpts())
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, s, "a", n, 600)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			files := segFiles(t, dir)
			i := tt.file
			if i < 0 {
				i += len(files)
			}
			path := files[i]
			base, _ := parseSegName(filepath.Base(path))
			offs, _ := frameOffsets(t, path)
			if len(offs) < 4 {
				t.Fatalf("%s holds %d records, want at least 4", path, len(offs))
			}
			var rec int
			rewrite(t, path, func(b []byte) []byte {
				rec = tt.change(b, offs)
				return b
			})

			_, err = Open(ctx, dir, kr, smallOpts())
			if !errors.Is(err, tt.is) {
				t.Fatalf("Open: %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move") {
				t.Errorf("error does not name the file and what to do: %v", err)
			}
			var ce *CorruptError
			if errors.As(err, &ce) {
				if rec < 0 && ce.Offset != -1 || rec >= 0 && (ce.Offset != offs[rec] || ce.Seq != base+uint64(rec)) {
					t.Errorf("CorruptError at offset %d, seq %d; want record %d", ce.Offset, ce.Seq, rec)
				}
				if rec >= 0 && !strings.Contains(err.Error(), fmt.Sprintf("truncate it to %d bytes", offs[rec])) {
					t.Errorf("error does not say where to truncate: %v", err)
				}
			}
			if _, err := Open(ctx, dir, kr, smallOpts()); !errors.Is(err, tt.is) {
				t.Errorf("second Open: %v; the damage must not be skipped", err)
			}
		})
	}
}

func fixFrameCRC(b []byte, off int64) {
	c := crc32.Checksum(b[off:off+12], castagnoli)
	b[off+12], b[off+13], b[off+14], b[off+15] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
}

// TestTamperedWhileOpen changes a segment under a running spool: Pending
// reports it rather than return what it read.
func TestTamperedWhileOpen(t *testing.T) {
	dir := spoolDir(t)
	s := open(t, dir, newKeyring(t), smallOpts())
	appendN(t, s, "a", 20, 600)
	path := segFiles(t, dir)[1]
	offs, _ := frameOffsets(t, path)
	rewrite(t, path, func(b []byte) []byte {
		b[offs[1]+50] ^= 1
		return b
	})
	_, err := s.Pending(0, 100)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Path != path {
		t.Fatalf("Pending: %v, want a CorruptError for %s", err, path)
	}
}

func TestCanaryNeverOnDisk(t *testing.T) {
	const canary = "Canary^Jane^Q 1970-01-01 MRN-4711-CANARY"
	ctx := context.Background()
	kr := newKeyring(t)
	dir := spoolDir(t)
	s, err := Open(ctx, dir, kr, smallOpts())
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 30 {
		data := fmt.Appendf(nil, `{"patient":%q,"n":%d,"pad":%q}`, canary, i, strings.Repeat(canary, i%20))
		if last, err = s.Append(data, FailClosed); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Ack(last / 2); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, needle := range []string{canary, "Jane", "MRN-4711"} {
				if bytes.Contains(b, []byte(needle)) {
					t.Errorf("%s: %s holds %q", when, path, needle)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check("while open")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check("after close")

	// Nor in the errors about those files.
	files := segFiles(t, dir)
	offs, _ := frameOffsets(t, files[len(files)-1])
	rewrite(t, files[len(files)-1], func(b []byte) []byte {
		b[offs[0]+30] ^= 1
		return b
	})
	_, err = Open(ctx, dir, kr, smallOpts())
	if err == nil || strings.Contains(err.Error(), "Jane") || strings.Contains(err.Error(), "MRN-4711") {
		t.Errorf("Open of a damaged spool: %v", err)
	}
}

func TestConcurrentAppends(t *testing.T) {
	const writers, each = 8, 150
	s := open(t, spoolDir(t), newKeyring(t), Options{SegmentBytes: 16 << 10, MaxBytes: 16 << 20})

	var mu sync.Mutex
	appended := map[uint64][]byte{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				data := payload(fmt.Sprintf("w%d-%d", w, i), 300+(i*37)%1200)
				seq, err := s.Append(data, FailClosed)
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				if _, dup := appended[seq]; dup {
					t.Errorf("seq %d handed out twice", seq)
				}
				appended[seq] = data
				mu.Unlock()
			}
		})
	}

	// One sender reads, delivers and acknowledges while the writers run.
	var got []Record
	done := make(chan error, 1)
	go func() {
		var after uint64
		for len(got) < writers*each {
			recs, err := s.Pending(after, 50)
			if err != nil {
				done <- err
				return
			}
			if len(recs) == 0 {
				select {
				case <-s.Wait(after):
				case <-time.After(10 * time.Second):
					done <- fmt.Errorf("no record after seq %d for 10s", after)
					return
				}
				continue
			}
			got = append(got, recs...)
			after = recs[len(recs)-1].Seq
			if err := s.Ack(after); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if want := seqRange(1, writers*each); !cmp.Equal(seqsOf(got), want) {
		t.Fatalf("delivered seqs are not 1-%d in order, once each", writers*each)
	}
	for _, r := range got {
		if !bytes.Equal(r.Data, appended[r.Seq]) {
			t.Errorf("seq %d does not hold what its Append stored", r.Seq)
		}
	}
	if st := s.Stats(); st.Pending != 0 || st.Acked != writers*each {
		t.Errorf("Stats = %+v", st)
	}
}

func TestWait(t *testing.T) {
	s := open(t, spoolDir(t), newKeyring(t), smallOpts())
	ch := s.Wait(0)
	select {
	case <-ch:
		t.Fatal("Wait on an empty spool returned at once")
	default:
	}
	go s.Append([]byte("x"), FailClosed)
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after an Append")
	}
	select {
	case <-s.Wait(0):
	default:
		t.Error("Wait(0) blocks with record 1 pending")
	}
	ch = s.Wait(1)
	s.Close()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after Close")
	}
}

func TestKeyRotationAndRetirement(t *testing.T) {
	ctx := context.Background()
	kr := newKeyring(t)
	dir := spoolDir(t)
	s, err := Open(ctx, dir, kr, smallOpts())
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "old", 3, 600)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	list, err := kr.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldID := list[0].ID
	if _, err := kr.Rotate(ctx); err != nil {
		t.Fatal(err)
	}

	// After a rotation old segments still open and new ones use the new KEK.
	s, err = Open(ctx, dir, kr, smallOpts())
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "new", 3, 600)
	if got := len(pendingAll(t, s)); got != 6 {
		t.Fatalf("%d records after rotation, want 6", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files := segFiles(t, dir)
	b, err := os.ReadFile(files[len(files)-1])
	if err != nil {
		t.Fatal(err)
	}
	if h, err := parseHeader(b); err != nil || h.keyID == oldID {
		t.Errorf("new segment's header: key %q, %v; want a key other than %s", h.keyID, err, oldID)
	}

	if err := kr.Retire(ctx, oldID); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, dir, kr, smallOpts())
	var ke *KeyError
	if !errors.Is(err, keys.ErrKeyRetired) || !errors.As(err, &ke) || ke.KeyID != oldID || ke.Path != files[0] {
		t.Fatalf("Open with the KEK retired: %v", err)
	}
	if !strings.Contains(err.Error(), oldID) || !strings.Contains(err.Error(), "move the file out of") {
		t.Errorf("error does not name the key and what to do: %v", err)
	}

	// Moving the segment aside, as the error says, lets the spool go on.
	if err := os.Rename(files[0], filepath.Join(filepath.Dir(dir), "quarantined.seg")); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, kr, smallOpts())
	if got := seqsOf(pendingAll(t, s)); !cmp.Equal(got, seqRange(4, 6)) {
		t.Errorf("pending = %v, want 4-6", got)
	}
	if seq, err := s.Append([]byte("x"), FailClosed); err != nil || seq != 7 {
		t.Errorf("Append = %d, %v; want 7", seq, err)
	}
}

func TestPermissions(t *testing.T) {
	ctx := context.Background()
	kr := newKeyring(t)

	dir := spoolDir(t)
	s := open(t, dir, kr, smallOpts())
	appendN(t, s, "a", 3, 100)
	s.Close()
	for _, path := range append(segFiles(t, dir), dir, filepath.Join(dir, stateName), filepath.Join(dir, lockName)) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s created with mode %v", path, fi.Mode())
		}
	}

	tests := []struct {
		name string
		path string
		mode os.FileMode
	}{
		{"directory readable by group", dir, 0o750},
		{"directory open to all", dir, 0o777},
		{"segment readable by others", segFiles(t, dir)[0], 0o604},
		{"state writable by group", filepath.Join(dir, stateName), 0o620},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fi, err := os.Stat(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(tt.path, tt.mode); err != nil {
				t.Fatal(err)
			}
			defer os.Chmod(tt.path, fi.Mode().Perm())
			_, err = Open(ctx, dir, kr, smallOpts())
			if !errors.Is(err, ErrUnsafePermissions) || !strings.Contains(err.Error(), tt.path) {
				t.Errorf("Open: %v, want ErrUnsafePermissions naming %s", err, tt.path)
			}
		})
	}
	s2, err := Open(ctx, dir, kr, smallOpts())
	if err != nil {
		t.Fatalf("Open after the modes were restored: %v", err)
	}
	s2.Close()
}

func TestOneProcessAtATime(t *testing.T) {
	dir := spoolDir(t)
	kr := newKeyring(t)
	s := open(t, dir, kr, smallOpts())
	if _, err := Open(context.Background(), dir, kr, smallOpts()); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	s.Close()
	open(t, dir, kr, smallOpts())
}

func TestClosed(t *testing.T) {
	s := open(t, spoolDir(t), newKeyring(t), smallOpts())
	appendN(t, s, "a", 2, 10)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append([]byte("x"), FailClosed); !errors.Is(err, ErrClosed) {
		t.Errorf("Append: %v", err)
	}
	if _, err := s.Pending(0, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Pending: %v", err)
	}
	if err := s.Ack(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Ack: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name string
		opt  Options
		want string // in the error; "" for success
	}{
		{"zero", Options{}, ""},
		{"small MaxBytes picks smaller segments", Options{MaxBytes: 64 << 10}, ""},
		{"segment too small", Options{SegmentBytes: 100}, "SegmentBytes"},
		{"MaxBytes below two segments", Options{SegmentBytes: 8 << 20, MaxBytes: 8 << 20}, "MaxBytes"},
		{"negative MaxBytes", Options{MaxBytes: -1}, "MaxBytes"},
		{"unknown sync policy", Options{Sync: 7}, "Options.Sync"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.opt.resolve()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("resolve: %v, want an error about %q", err, tt.want)
			}
		})
	}
}

func TestStatsOldest(t *testing.T) {
	now := testNow
	opt := smallOpts()
	opt.Now = func() time.Time { return now }
	s := open(t, spoolDir(t), newKeyring(t), opt)
	for i := range 100 {
		now = testNow.Add(time.Duration(i) * time.Second)
		if _, err := s.Append([]byte("x"), FailClosed); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Stats().Oldest; !got.Equal(testNow) {
		t.Errorf("Oldest = %v, want %v", got, testNow)
	}
	if err := s.Ack(70); err != nil {
		t.Fatal(err)
	}
	// Record 71 was appended at +70s; Stats is exact to within 32 records.
	got := s.Stats().Oldest.Sub(testNow)
	if got > 70*time.Second || got < 70*time.Second-markEvery*time.Second {
		t.Errorf("Oldest after Ack(70) = +%v, want +70s or up to %d records before", got, markEvery)
	}
	if err := s.Ack(100); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); !st.Oldest.IsZero() || st.Pending != 0 {
		t.Errorf("Stats with nothing pending = %+v", st)
	}
}
