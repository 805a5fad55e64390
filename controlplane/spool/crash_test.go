package spool

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/medgate/medgate/crypto/keys"
)

// The crash test runs this test binary again as a child that appends
// until it is killed.
const (
	crashDirEnv     = "MEDGATE_SPOOL_CRASH_DIR"
	crashKeyringEnv = "MEDGATE_SPOOL_CRASH_KEYRING"
	crashWriters    = 8
	crashRecordSize = 600
)

// TestCrashChild is the child of TestCrashKill. It appends from several
// goroutines and prints "seq id" for every Append as soon as it returns.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("run by TestCrashKill")
	}
	kr, err := keys.OpenFile(os.Getenv(crashKeyringEnv))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), dir, kr, Options{SegmentBytes: 64 << 10, MaxBytes: 256 << 20})
	if err != nil {
		fmt.Printf("open failed: %v\n", err)
		t.Fatal(err)
	}
	var mu sync.Mutex
	round := os.Getpid()
	for w := range crashWriters {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("p%d-w%d-%d", round, w, i)
				seq, err := s.Append(payload(id, crashRecordSize), FailClosed)
				mu.Lock()
				if err != nil {
					fmt.Printf("append failed: %v\n", err)
				} else {
					fmt.Printf("%d %s\n", seq, id)
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Minute)
	t.Fatal("not killed within a minute")
}

// TestCrashKill kills a process that is appending with SIGKILL at a random
// point, several times over the same spool, and checks after each kill
// that every Append that returned in the child is on disk and intact.
func TestCrashKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	kr := newKeyring(t)
	dir := spoolDir(t)

	want := map[uint64]string{} // every seq an Append returned, and its record's id
	var acked, highest uint64
	for round := range 4 {
		killAfter := 50 + rng.IntN(1500)
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1", "-test.timeout=2m")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashKeyringEnv+"="+kr.Path())
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Read until the kill and after it, to the end of the pipe: lines
		// the child wrote before it died are still in the pipe.
		lines, killed := 0, false
		var other []string
		var roundMin uint64
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			seqStr, id, ok := strings.Cut(sc.Text(), " ")
			seq, err := strconv.ParseUint(seqStr, 10, 64)
			if !ok || err != nil || !strings.HasPrefix(id, "p") {
				other = append(other, sc.Text()) // the test framework's, or a failure
				continue
			}
			if _, dup := want[seq]; dup {
				t.Fatalf("round %d: seq %d handed out twice", round, seq)
			}
			if seq <= highest {
				t.Errorf("round %d: seq %d is not above %d, the highest before this process", round, seq, highest)
			}
			want[seq] = id
			if roundMin == 0 || seq < roundMin {
				roundMin = seq
			}
			lines++
			if lines == killAfter && !killed {
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
		}
		err = cmd.Wait()
		var ee *exec.ExitError
		if !killed || !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v after %d records, before it was killed; it said:\n%s",
				round, err, lines, strings.Join(other, "\n"))
		}

		s, err := Open(context.Background(), dir, kr, Options{SegmentBytes: 64 << 10, MaxBytes: 256 << 20})
		if err != nil {
			t.Fatalf("round %d: Open after kill: %v", round, err)
		}
		got := map[uint64]Record{}
		var prev uint64
		for _, r := range pendingAll(t, s) {
			if r.Seq <= prev {
				t.Fatalf("round %d: seq %d after %d", round, r.Seq, prev)
			}
			prev = r.Seq
			got[r.Seq] = r
		}
		for seq, id := range want {
			if seq <= acked {
				continue
			}
			r, ok := got[seq]
			if !ok {
				t.Errorf("round %d: seq %d (%s) returned by Append, missing after the kill", round, seq, id)
			} else if !bytes.Equal(r.Data, payload(id, crashRecordSize)) {
				t.Errorf("round %d: seq %d does not hold %s", round, seq, id)
			}
		}
		t.Logf("round %d: killed after %d printed appends; %d printed in all, %d on disk after seq %d",
			round, killAfter, lines, len(got), acked)
		highest = max(highest, prev)
		for seq := range want {
			highest = max(highest, seq)
		}
		// Acknowledge part of what is there, so deletion runs between kills.
		if round%2 == 1 && prev > acked {
			acked = acked + (prev-acked)/2
			if err := s.Ack(acked); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				fi, _ := e.Info()
				t.Logf("%s %d bytes", filepath.Join(dir, e.Name()), fi.Size())
			}
			return
		}
	}
}
