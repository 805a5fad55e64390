package store

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestOpenURL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, url string
		wantErr   string
	}{
		{"bare path", filepath.Join(dir, "a"), ""},
		{"file:", "file:" + filepath.Join(dir, "b"), ""},
		{"file://", "file://" + filepath.Join(dir, "c"), ""},
		{"empty", "", "empty URL"},
		{"other scheme", "mysql://db/x", `"mysql"`},
		{"bad postgres URL", "postgres://u:secret@host:notaport/db", "does not parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(ctx, tc.url, testKey("k"))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				mustClose(t, s)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Open(%q) = %v, want an error containing %s", tc.url, err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
	if _, err := Open(ctx, filepath.Join(dir, "missing"), nil); err == nil {
		t.Error("read-only Open of a missing directory succeeded")
	}
	if _, err := Open(ctx, filepath.Join(dir, "a"), testKey("k")[:10]); err == nil {
		t.Error("Open accepted a short signer")
	}
}

func TestDirLock(t *testing.T) {
	t.Parallel()
	url := "file:" + t.TempDir()
	w := openStore(t, url, testKey("k"), 0)
	mustAppend(t, w, events(srcA, 1, 2))
	if _, err := Open(context.Background(), url, testKey("k")); !errors.Is(err, ErrLocked) {
		t.Fatalf("second writer: %v, want ErrLocked", err)
	}
	r := reopenRO(t, url)
	if got := mustQuery(t, r, Filter{}); len(got) != 2 {
		t.Errorf("reader beside the writer sees %d entries, want 2", len(got))
	}
	mustClose(t, w)
	w = openStore(t, url, testKey("k"), 0)
	mustClose(t, w)
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestDirTornTail(t *testing.T) {
	t.Parallel()
	// The block an interrupted Append would have written.
	next := appendBlock(nil, bytes.Repeat([]byte{kindEntries, 1, 2, 3}, 100))
	for _, tc := range []struct {
		name string
		file string
		tail []byte
	}{
		{"half a header", eventsFile, next[:6]},
		{"header only", eventsFile, next[:blockHeader]},
		{"half the payload", eventsFile, next[:len(next)/2]},
		{"all but one byte", eventsFile, next[:len(next)-1]},
		{"bad checksum", eventsFile, append(next[:len(next)-1:len(next)-1], next[len(next)-1]^1)},
		{"zeros", eventsFile, make([]byte, 4096)},
		{"garbage length", eventsFile, append(append([]byte{}, blockMagic[:]...), 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0)},
		{"checkpoint half written", checkpointsFile, next[:len(next)/3]},
		{"policy half written", policiesFile, next[:20]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			url := "file:" + dir
			s := openStore(t, url, testKey("k"), 0)
			mustAppend(t, s, events(srcA, 1, 5))
			mustAppend(t, s, events(srcA, 6, 5))
			if err := s.PutPolicy(ctx, PolicyVersion{Version: "v1", Action: "apply"}); err != nil {
				t.Fatal(err)
			}
			mustClose(t, s)
			path := filepath.Join(dir, tc.file)
			clean, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, append(clean, tc.tail...), 0o600); err != nil {
				t.Fatal(err)
			}

			// A reader takes the tail for a write in progress.
			if rep, err := Verify(ctx, reopenRO(t, url), PublicKey(testKey("k"))); err != nil || !rep.OK() || rep.Head != 10 {
				t.Errorf("read-only Verify before recovery = %+v, %v", rep, err)
			}

			var logs logBuffer
			s, err = OpenWith(ctx, Config{URL: url}, Deps{Signer: testKey("k"), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatalf("open after a torn write: %v", err)
			}
			if !strings.Contains(logs.String(), "torn tail") || !strings.Contains(logs.String(), tc.file) {
				t.Errorf("no warning naming %s logged; log:\n%s", tc.file, logs.String())
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(after, clean) {
				t.Errorf("%s is %d bytes after recovery, want the %d it had before the torn write", tc.file, len(after), len(clean))
			}
			mustAppend(t, s, events(srcA, 11, 3))
			if err := s.PutPolicy(ctx, PolicyVersion{Version: "v2", Action: "apply"}); err != nil {
				t.Fatal(err)
			}
			mustClose(t, s)
			rep, err := Verify(ctx, reopenRO(t, url), PublicKey(testKey("k")))
			if err != nil || !rep.OK() || rep.Head != 13 || rep.Signed != 13 {
				t.Errorf("Verify after recovery = %+v, %v", rep, err)
			}
			if ps, err := reopenRO(t, url).Policies(ctx); err != nil || len(ps) != 2 {
				t.Errorf("Policies after recovery = %d, %v; want 2", len(ps), err)
			}
		})
	}
}

// TestDirCorruptMiddle: damage followed by valid blocks is not a crash, so
// the writer refuses to continue and the reader reports it.
func TestDirCorruptMiddle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	url := "file:" + dir
	s := openStore(t, url, testKey("k"), 0)
	mustAppend(t, s, events(srcA, 1, 5))
	mustAppend(t, s, events(srcA, 6, 5))
	mustClose(t, s)
	path := filepath.Join(dir, eventsFile)
	b, _ := os.ReadFile(path)
	i := bytes.Index(b, []byte(`"route"`)) // inside the first block
	b[i+2] = 'X'
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	before := len(b)

	if _, err := Open(ctx, url, testKey("k")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("writable Open = %v, want ErrCorrupt", err)
	}
	if fi, _ := os.Stat(path); fi.Size() != int64(before) {
		t.Errorf("events.log was changed by the refused Open")
	}
	r := reopenRO(t, url)
	if _, err := r.Query(ctx, Filter{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Query = %v, want ErrCorrupt", err)
	}
	n := 0
	err := r.Scan(ctx, Filter{}, func(Entry) error { n++; return nil })
	if !errors.Is(err, ErrCorrupt) || n != 5 {
		t.Errorf("Scan read %d entries and returned %v; want the 5 of the intact block and ErrCorrupt", n, err)
	}
	rep, err := Verify(ctx, r, PublicKey(testKey("k")))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[ProblemKind]bool{}
	for _, p := range rep.Problems {
		kinds[p.Kind] = true
	}
	for _, k := range []ProblemKind{ProblemGap, ProblemPrev, ProblemCorrupt} {
		if !kinds[k] {
			t.Errorf("Verify did not report %s; problems: %v", k, rep.Problems)
		}
	}
}

func TestDirStatusCompaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	url := "file:" + dir
	s := openStore(t, url, testKey("k"), 0)
	for i := range 300 {
		if err := s.PutStatus(ctx, NodeStatus{Node: []string{srcA, srcB}[i%2], Acked: strings.Repeat("v", i%7+1)}); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := s.Statuses(ctx)
	mustClose(t, s)
	big, _ := os.Stat(filepath.Join(dir, statusFile))
	s = openStore(t, url, testKey("k"), 0)
	got, _ := s.Statuses(ctx)
	mustClose(t, s)
	small, _ := os.Stat(filepath.Join(dir, statusFile))
	if small.Size()*10 > big.Size() {
		t.Errorf("status.log went from %d to %d bytes; want it compacted", big.Size(), small.Size())
	}
	if diff := cmp.Diff(want, got); diff != "" || len(got) != 2 {
		t.Errorf("statuses after compaction (-want +got):\n%s", diff)
	}
}
