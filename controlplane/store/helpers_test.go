package store

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// testKey is a fixed signer, so runs are reproducible.
func testKey(label string) ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	copy(seed, label)
	return ed25519.NewKeyFromSeed(seed)
}

// clock is a deterministic clock that advances a millisecond per reading.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 123456789, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

// record builds an access event record with the given fields set.
func record(seq int, kv ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"time":"2026-03-01T10:%02d:00Z","kind":"object","x_unknown":{"kept":[1,2]}`, seq%60)
	obj := ""
	for i := 0; i+1 < len(kv); i += 2 {
		switch kv[i] {
		case "patient", "study_uid":
			if obj != "" {
				obj += ","
			}
			obj += fmt.Sprintf("%q:%q", kv[i], kv[i+1])
		default:
			fmt.Fprintf(&b, ",%q:%q", kv[i], kv[i+1])
		}
	}
	if obj != "" {
		fmt.Fprintf(&b, `,"object":{%s}`, obj)
	}
	b.WriteString("}")
	return b.Bytes()
}

// events makes n events of source with sequence numbers from first.
func events(source string, first, n int) []Event {
	out := make([]Event, n)
	for i := range out {
		seq := first + i
		out[i] = Event{Source: source, Seq: uint64(seq), Record: record(seq, "route", "r1", "verdict", "allow")}
	}
	return out
}

// backend runs the same tests against each implementation.
type backend struct {
	name string
	// url returns the location of a new, empty store.
	url func(t *testing.T) string
	// rewrite replaces the stored chain and checkpoints with what the edit
	// functions return, as someone with write access to the storage could.
	// The store is closed meanwhile.
	rewrite func(t *testing.T, url string, entries func([]Entry) []Entry, cps func([]Checkpoint) []Checkpoint)
}

func openStore(t *testing.T, url string, key ed25519.PrivateKey, every int) Store {
	t.Helper()
	s, err := OpenWith(context.Background(), Config{URL: url, CheckpointEvery: every},
		Deps{Signer: key, Now: newClock().Now, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	return s
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(p)))
	return len(p), nil
}

func dirBackend() backend {
	return backend{
		name: "embedded",
		url:  func(t *testing.T) string { return "file:" + filepath.Join(t.TempDir(), "store") },
		rewrite: func(t *testing.T, url string, ef func([]Entry) []Entry, cf func([]Checkpoint) []Checkpoint) {
			t.Helper()
			dir := url[len("file:"):]
			ro, err := Open(context.Background(), url, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			all, err := ro.Query(context.Background(), Filter{})
			if err != nil {
				t.Fatal(err)
			}
			cps, err := ro.Checkpoints(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if ef != nil {
				var buf []byte
				for _, e := range ef(all) {
					buf = appendBlock(buf, appendEntry([]byte{kindEntries}, &e))
				}
				if err := os.WriteFile(filepath.Join(dir, eventsFile), buf, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if cf != nil {
				var buf []byte
				for _, c := range cf(cps) {
					buf = appendBlock(buf, appendCheckpoint(nil, &c))
				}
				if err := os.WriteFile(filepath.Join(dir, checkpointsFile), buf, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		},
	}
}

func pgBackend(newDB func(t *testing.T) string) backend {
	return backend{
		name: "postgres",
		url:  newDB,
		rewrite: func(t *testing.T, url string, ef func([]Entry) []Entry, cf func([]Checkpoint) []Checkpoint) {
			t.Helper()
			ctx := context.Background()
			ro, err := Open(ctx, url, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			all, err := ro.Query(ctx, Filter{})
			if err != nil {
				t.Fatal(err)
			}
			cps, err := ro.Checkpoints(ctx)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				if ef != nil {
					if _, err := tx.Exec(ctx, `DELETE FROM medgate_events`); err != nil {
						return err
					}
					for _, e := range ef(all) {
						f, _ := extract(e.Record)
						_, err := tx.Exec(ctx, `INSERT INTO medgate_events (idx, received, source, seq, record, prev, hash, ev_time,
							peer, route, verdict, local_jurisdiction, peer_jurisdiction, study_uid, patient)
							VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)`,
							int64(e.Index), e.Received, e.Source, int64(e.Seq), []byte(e.Record), e.Prev, e.Hash,
							pgtype.Timestamptz{Time: f.Time, Valid: f.hasValidTime},
							f.Peer, f.Route, f.Verdict, f.LocalJur, f.PeerJur, f.StudyUID, f.Patient)
						if err != nil {
							return err
						}
					}
				}
				if cf != nil {
					if _, err := tx.Exec(ctx, `DELETE FROM medgate_checkpoints`); err != nil {
						return err
					}
					for _, c := range cf(cps) {
						_, err := tx.Exec(ctx, `INSERT INTO medgate_checkpoints (idx, hash, time, public_key, signature) VALUES ($1,$2,$3,$4,$5)`,
							int64(c.Index), c.Hash, c.Time, []byte(c.PublicKey), c.Signature)
						if err != nil {
							return err
						}
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		},
	}
}

func mustAppend(t *testing.T, s Store, evs []Event) {
	t.Helper()
	if err := s.Append(context.Background(), evs); err != nil {
		t.Fatalf("append: %v", err)
	}
}

func mustQuery(t *testing.T, s Store, f Filter) []Entry {
	t.Helper()
	es, err := s.Query(context.Background(), f)
	if err != nil {
		t.Fatalf("query %+v: %v", f, err)
	}
	return es
}

func mustClose(t *testing.T, s Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}
