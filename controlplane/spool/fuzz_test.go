package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medgate/medgate/crypto/keys"
)

// FuzzSegment feeds segment files, seeded from ones the spool wrote, to the
// decoder Open and Pending use. It must not panic; what it accepts must
// read back the same way from the record reader, and survive being
// re-encoded by the spool's own encoder; a torn tail verdict must not
// panic either.
func FuzzSegment(f *testing.F) {
	kr := fuzzKeyring(f)
	dir := spoolDir(f)
	s, err := Open(context.Background(), dir, kr, Options{SegmentBytes: 4 << 10, MaxBytes: 1 << 20, Now: fixedClock})
	if err != nil {
		f.Fatal(err)
	}
	for i, n := range []int{0, 1, 17, 600, 1500, 300, 600, 900, 2000, 64, 600, 600} {
		if _, err := s.Append(payload(fmt.Sprint(i), n), FailClosed); err != nil {
			f.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		f.Fatal(err)
	}
	for _, path := range segFiles(f, dir) {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-7])                          // torn
		f.Add(append(bytes.Clone(b), 0, 0, 0, 0, 0)) // zeros after
	}

	unwrap := memoUnwrap(kr)
	f.Fuzz(func(t *testing.T, b []byte) {
		size := int64(len(b))
		sc, err := scanSegment(bytes.NewReader(b), size, "fuzz.seg", unwrap)
		if err != nil {
			var ce *CorruptError
			var ke *KeyError
			if !errors.As(err, &ce) && !errors.As(err, &ke) {
				t.Fatalf("header error of an unexpected kind: %v", err)
			}
			return
		}
		if sc.end > size || sc.end < int64(sc.hdr.len) {
			t.Fatalf("good records end at %d in %d bytes", sc.end, size)
		}
		if fe := sc.fail; fe == nil && sc.end != size || fe != nil && fe.off != sc.end {
			t.Fatalf("scan stopped at %d of %d with %v", sc.end, size, fe)
		}
		if sc.fail != nil {
			if _, err := isTorn(bytes.NewReader(b), sc.fail, size); err != nil {
				t.Fatalf("isTorn: %v", err)
			}
		}

		// The record reader sees what the scan saw.
		type rec struct {
			seq  uint64
			time int64
			data []byte
		}
		var recs []rec
		fr := newFrameReader(bytes.NewReader(b), int64(sc.hdr.len), sc.end, sc.key, sc.hdr.base)
		for {
			seq, t0, data, err := fr.next(true)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("reading back an accepted record: %v", err)
			}
			recs = append(recs, rec{seq, t0, data})
		}
		if uint64(len(recs)) != sc.last+1-sc.hdr.base {
			t.Fatalf("read back %d records, scan counted %d", len(recs), sc.last+1-sc.hdr.base)
		}

		// Re-encoded by the spool's encoder, the records scan the same.
		enc := bytes.Clone(b[:sc.hdr.len])
		var scratch []byte
		for _, r := range recs {
			enc, scratch = sc.key.appendFrame(enc, scratch, r.seq, time.Unix(0, r.time), r.data)
		}
		sc2, err := scanSegment(bytes.NewReader(enc), int64(len(enc)), "fuzz.seg", unwrap)
		if err != nil || sc2.fail != nil {
			t.Fatalf("re-encoded segment: %v, %v", err, sc2.fail)
		}
		if sc2.last != sc.last || sc2.end != sc.end {
			t.Fatalf("re-encoded segment ends at seq %d offset %d, want %d and %d", sc2.last, sc2.end, sc.last, sc.end)
		}
		if diff := cmp.Diff(sc.marks, sc2.marks, cmp.AllowUnexported(mark{})); diff != "" {
			t.Fatalf("re-encoded segment's marks (-want +got):\n%s", diff)
		}
	})
}

// fuzzKeyring loads testdata/fuzz-keyring.json, a keyring made for this
// test alone, so that inputs kept under testdata/fuzz unwrap the same on
// every run. Git does not keep the file's mode, so it is copied to a
// private directory first.
func fuzzKeyring(t testing.TB) *keys.File {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz-keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "keys")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "keyring.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	kr, err := keys.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// memoUnwrap caches a keyring's answers: a File keyring checks its file on
// every call, which would dominate fuzzing.
func memoUnwrap(kr keys.Keyring) unwrapFunc {
	type answer struct {
		dek []byte
		err error
	}
	var mu sync.Mutex
	memo := map[string]answer{}
	return func(keyID string, wrapped []byte) ([]byte, error) {
		k := keyID + "\x00" + string(wrapped)
		mu.Lock()
		defer mu.Unlock()
		a, ok := memo[k]
		if !ok {
			a.dek, a.err = kr.Unwrap(context.Background(), keyID, wrapped)
			memo[k] = a
		}
		return bytes.Clone(a.dek), a.err
	}
}
