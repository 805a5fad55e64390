package spool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medgate/medgate/crypto/keys"
)

// testNow is the time every test record is appended at, unless a test
// moves the clock.
var testNow = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func fixedClock() time.Time { return testNow }

// newKeyring returns a fresh file keyring in its own temporary directory.
func newKeyring(t testing.TB) *keys.File {
	t.Helper()
	kr, err := keys.InitFile(filepath.Join(t.TempDir(), "keys", "keyring.json"))
	if err != nil {
		t.Fatalf("InitFile: %v", err)
	}
	return kr
}

// spoolDir returns a path for a spool that does not exist yet.
func spoolDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "spool")
}

// smallOpts makes segments of 4 KiB (about six 600-byte records) so tests
// cross segment boundaries quickly.
func smallOpts() Options {
	return Options{SegmentBytes: 4 << 10, MaxBytes: 1 << 20, Now: fixedClock}
}

// open opens a spool that the test closes at its end.
func open(t testing.TB, dir string, kr keys.Keyring, opt Options) *Spool {
	t.Helper()
	s, err := Open(context.Background(), dir, kr, opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// payload returns a record of n bytes that starts with id, so what comes
// back can be checked against what went in.
func payload(id string, n int) []byte {
	sum := sha256.Sum256([]byte(id))
	fill := hex.EncodeToString(sum[:])
	b := []byte(strings.Repeat(fill, n/len(fill)+1))[:n]
	copy(b, id+" ")
	return b
}

// appendN appends n records named prefix-0 ... and returns their seqs.
func appendN(t testing.TB, s *Spool, prefix string, n, size int) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := range n {
		seq, err := s.Append(payload(fmt.Sprintf("%s-%d", prefix, i), size), FailClosed)
		if err != nil {
			t.Fatalf("Append %s-%d: %v", prefix, i, err)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

// pendingAll reads every pending record, in batches of 7 so that reads
// resume mid-segment.
func pendingAll(t testing.TB, s *Spool) []Record {
	t.Helper()
	var out []Record
	var after uint64
	for {
		recs, err := s.Pending(after, 7)
		if err != nil {
			t.Fatalf("Pending(%d): %v", after, err)
		}
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		after = recs[len(recs)-1].Seq
	}
}

func seqsOf(recs []Record) []uint64 {
	var out []uint64
	for _, r := range recs {
		out = append(out, r.Seq)
	}
	return out
}

// seqRange returns from, from+1, ..., to.
func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// segFiles returns the segment files in dir, oldest first.
func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), segSuffix) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(out)
	return out
}

// frameOffsets returns where each record of the segment at path starts,
// and the file's size.
func frameOffsets(t testing.TB, path string) ([]int64, int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for off := int64(h.len); off < int64(len(b)); {
		offs = append(offs, off)
		off += frameHeaderLen + int64(uint32(b[off])<<24|uint32(b[off+1])<<16|uint32(b[off+2])<<8|uint32(b[off+3]))
	}
	return offs, int64(len(b))
}

// rewrite changes the file at path in place.
func rewrite(t testing.TB, path string, change func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, change(b), 0o600); err != nil {
		t.Fatal(err)
	}
}
