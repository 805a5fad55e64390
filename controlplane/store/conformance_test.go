package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/medgate/medgate/controlplane/store/storetest"
)

const (
	srcA = "spiffe://hospital.example/sidecar/a"
	srcB = "spiffe://hospital.example/sidecar/b"
)

func TestEmbedded(t *testing.T) {
	t.Parallel()
	runConformance(t, dirBackend())
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	c := storetest.Start(t, storetest.Options{})
	b := pgBackend(func(t *testing.T) string { return c.NewDatabase(t) })
	runConformance(t, b)
	t.Run("replicas", func(t *testing.T) { testReplicas(t, c.NewDatabase(t)) })
}

func runConformance(t *testing.T, b backend) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, backend)
	}{
		{"round trip", testRoundTrip},
		{"idempotent", testIdempotent},
		{"invalid batch stores nothing", testInvalid},
		{"filters", testFilters},
		{"policies and status", testPoliciesStatus},
		{"checkpoints", testCheckpoints},
		{"tampering", testTampering},
		{"read-only", testReadOnly},
		{"concurrent appends", testConcurrent},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, b) })
	}
}

func testRoundTrip(t *testing.T, b backend) {
	ctx := context.Background()
	url := b.url(t)
	s := openStore(t, url, testKey("k"), 0)
	// Whitespace, key order, escapes and unknown keys survive byte for byte.
	odd := []byte(" {\"z\":1,  \"time\":\"2026-03-01T10:00:00.123456789+02:00\",\"note\":\"caf\\u00e9 \u00e9\",\"nested\":{\"a\":[true,null]}}\n")
	in := []Event{
		{Source: srcA, Seq: 1, Record: odd},
		{Source: srcA, Seq: 3, Record: record(3, "route", "pacs")},
		{Source: srcB, Seq: 7, Record: record(7)},
	}
	mustAppend(t, s, in)
	mustAppend(t, s, []Event{{Source: srcA, Seq: 4, Record: record(4)}})
	got := mustQuery(t, s, Filter{})
	if len(got) != 4 {
		t.Fatalf("got %d entries, want 4", len(got))
	}
	prev := zeroHash
	for i, e := range got {
		if e.Index != uint64(i+1) {
			t.Errorf("entry %d has Index %d", i, e.Index)
		}
		if i < 3 && !bytes.Equal(e.Record, in[i].Record) {
			t.Errorf("entry %d record = %q, want %q", i, e.Record, in[i].Record)
		}
		if !bytes.Equal(e.Prev, prev) {
			t.Errorf("entry %d Prev does not chain", i)
		}
		if !bytes.Equal(EntryHash(&e), e.Hash) {
			t.Errorf("entry %d Hash is not EntryHash", i)
		}
		if e.Received.IsZero() || e.Received.Location() != time.UTC {
			t.Errorf("entry %d Received = %v", i, e.Received)
		}
		prev = e.Hash
	}
	for src, want := range map[string]uint64{srcA: 4, srcB: 7, "spiffe://other": 0} {
		if hw, err := s.HighWater(ctx, src); err != nil || hw != want {
			t.Errorf("HighWater(%s) = %d, %v; want %d", src, hw, err, want)
		}
	}
	mustClose(t, s)
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Append(ctx, events(srcA, 10, 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}

	// The chain goes on where it was after a reopen.
	s = openStore(t, url, testKey("k"), 0)
	defer mustClose(t, s)
	mustAppend(t, s, events(srcB, 8, 2))
	again := mustQuery(t, s, Filter{})
	if diff := cmp.Diff(got, again[:4]); diff != "" {
		t.Errorf("entries changed across reopen (-before +after):\n%s", diff)
	}
	rep, err := Verify(ctx, s, PublicKey(testKey("k")))
	if err != nil || !rep.OK() || rep.Head != 6 {
		t.Errorf("Verify = %+v, %v; want OK with head 6", rep, err)
	}
}

func testIdempotent(t *testing.T, b backend) {
	ctx := context.Background()
	url := b.url(t)
	s := openStore(t, url, testKey("k"), 0)
	batch := append(events(srcA, 1, 5), events(srcB, 1, 5)...)
	mustAppend(t, s, batch)
	mustAppend(t, s, batch)
	// A resend that overlaps: 4 and 5 again, then 6 and 7 new; a duplicate
	// inside the batch; and a late event below the mark.
	mustAppend(t, s, append(events(srcA, 4, 4), events(srcA, 7, 1)[0], events(srcA, 2, 1)[0]))
	mustClose(t, s)

	s = openStore(t, url, testKey("k"), 0)
	defer mustClose(t, s)
	mustAppend(t, s, batch)
	mustAppend(t, s, events(srcA, 6, 3)) // 6, 7 stored, 8 new
	got := mustQuery(t, s, Filter{})
	var keys []string
	for _, e := range got {
		keys = append(keys, fmt.Sprintf("%s/%d", e.Source[len(e.Source)-1:], e.Seq))
	}
	want := []string{"a/1", "a/2", "a/3", "a/4", "a/5", "b/1", "b/2", "b/3", "b/4", "b/5", "a/6", "a/7", "a/8"}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Errorf("stored events (-want +got):\n%s", diff)
	}
	if hw, _ := s.HighWater(ctx, srcA); hw != 8 {
		t.Errorf("HighWater = %d, want 8", hw)
	}
	if rep, err := Verify(ctx, s, PublicKey(testKey("k"))); err != nil || !rep.OK() {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

func testInvalid(t *testing.T, b backend) {
	ctx := context.Background()
	s := openStore(t, b.url(t), testKey("k"), 0)
	defer mustClose(t, s)
	for _, tc := range []struct {
		name string
		ev   Event
	}{
		{"array", Event{Source: srcA, Seq: 9, Record: []byte(`[1]`)}},
		{"string", Event{Source: srcA, Seq: 9, Record: []byte(`"x"`)}},
		{"null", Event{Source: srcA, Seq: 9, Record: []byte(`null`)}},
		{"number", Event{Source: srcA, Seq: 9, Record: []byte(`42`)}},
		{"empty", Event{Source: srcA, Seq: 9, Record: nil}},
		{"broken JSON", Event{Source: srcA, Seq: 9, Record: []byte(`{"a":`)}},
		{"trailing data", Event{Source: srcA, Seq: 9, Record: []byte(`{"a":1} {"b":2}`)}},
		{"seq 0", Event{Source: srcA, Seq: 0, Record: record(1)}},
		{"empty source", Event{Source: "", Seq: 9, Record: record(1)}},
		{"NUL in source", Event{Source: "spiffe://x\x00", Seq: 9, Record: record(1)}},
		{"huge seq", Event{Source: srcA, Seq: 1 << 63, Record: record(1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			batch := append(events(srcA, 1, 3), tc.ev)
			err := s.Append(ctx, batch)
			if !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("Append = %v, want ErrInvalidEvent", err)
			}
			if got := mustQuery(t, s, Filter{}); len(got) != 0 {
				t.Errorf("%d entries stored from a refused batch", len(got))
			}
		})
	}
	// Odd types in known fields do not refuse the record.
	mustAppend(t, s, []Event{{Source: srcA, Seq: 1, Record: []byte(`{"route":5,"time":"yesterday","object":"x","peer_id":"a\u0000b"}`)}})
	if got := mustQuery(t, s, Filter{}); len(got) != 1 {
		t.Errorf("%d entries, want 1", len(got))
	}
}

func testFilters(t *testing.T, b backend) {
	ctx := context.Background()
	s := openStore(t, b.url(t), testKey("k"), 0)
	defer mustClose(t, s)
	ev := func(src string, seq int, kv ...string) Event {
		return Event{Source: src, Seq: uint64(seq), Record: record(seq, kv...)}
	}
	mustAppend(t, s, []Event{
		ev(srcA, 1, "peer_id", "spiffe://lab", "route", "pacs", "verdict", "allow", "local_jurisdiction", "EU", "peer_jurisdiction", "CN", "patient", "tokP1", "study_uid", "1.2.3"),
		ev(srcA, 2, "peer_id", "spiffe://lab", "route", "pacs", "verdict", "deny", "local_jurisdiction", "EU", "peer_jurisdiction", "EU"),
		ev(srcB, 3, "peer_id", "spiffe://ris", "route", "hl7", "verdict", "allow", "local_jurisdiction", "US", "peer_jurisdiction", "CN", "patient", "tokP2"),
		ev(srcB, 4, "peer_id", "spiffe://lab", "route", "pacs", "verdict", "deidentify", "local_jurisdiction", "US", "peer_jurisdiction", "US", "patient", "tokP1", "study_uid", "1.2.4"),
		{Source: srcB, Seq: 5, Record: []byte(`{"kind":"session_end","route":"pacs"}`)}, // no time
	})
	at := func(m int) time.Time { return time.Date(2026, 3, 1, 10, m, 0, 0, time.UTC) }
	for _, tc := range []struct {
		name string
		f    Filter
		want []uint64 // seqs
	}{
		{"all", Filter{}, []uint64{1, 2, 3, 4, 5}},
		{"source", Filter{Source: srcB}, []uint64{3, 4, 5}},
		{"peer", Filter{Peer: "spiffe://lab"}, []uint64{1, 2, 4}},
		{"route", Filter{Route: "pacs"}, []uint64{1, 2, 4, 5}},
		{"verdict", Filter{Verdict: "allow"}, []uint64{1, 3}},
		{"jurisdiction local or peer", Filter{Jurisdiction: "CN"}, []uint64{1, 3}},
		{"jurisdiction US", Filter{Jurisdiction: "US"}, []uint64{3, 4}},
		{"patient", Filter{Patient: "tokP1"}, []uint64{1, 4}},
		{"study", Filter{StudyUID: "1.2.4"}, []uint64{4}},
		{"since inclusive", Filter{Since: at(3)}, []uint64{3, 4}},
		{"until exclusive", Filter{Until: at(3)}, []uint64{1, 2}},
		{"window", Filter{Since: at(2), Until: at(4)}, []uint64{2, 3}},
		{"combined", Filter{Patient: "tokP1", Jurisdiction: "EU", Verdict: "allow"}, []uint64{1}},
		{"limit", Filter{Route: "pacs", Limit: 2}, []uint64{1, 2}},
		{"no match", Filter{Patient: "nobody"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []uint64
			for _, e := range mustQuery(t, s, tc.f) {
				got = append(got, e.Seq)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("seqs (-want +got):\n%s", diff)
			}
		})
	}
	// Scan stops at fn's error and returns it.
	stop := errors.New("enough")
	n := 0
	err := s.Scan(ctx, Filter{}, func(Entry) error { n++; return stop })
	if err != stop || n != 1 {
		t.Errorf("Scan = %v after %d entries, want the callback's error after 1", err, n)
	}
}

func testPoliciesStatus(t *testing.T, b backend) {
	ctx := context.Background()
	url := b.url(t)
	s := openStore(t, url, testKey("k"), 0)
	t0 := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	pv := []PolicyVersion{
		{Version: "3f2a", Documents: []Document{{Name: "a.yaml", YAML: []byte("kind: PolicySet\n")}, {Name: "b.yaml", YAML: []byte("x: 1\n")}},
			Author: "spiffe://hospital.example/admin/alice", Time: t0, Action: "apply"},
		{Version: "9c1d", Documents: []Document{{Name: "a.yaml", YAML: []byte("kind: PolicySet\nspec: {}\n")}},
			Author: "spiffe://hospital.example/admin/alice", Time: t0.Add(time.Hour), Action: "apply"},
		{Version: "3f2a", Documents: []Document{{Name: "a.yaml", YAML: []byte("kind: PolicySet\n")}},
			Author: "spiffe://hospital.example/admin/bob", Time: t0.Add(2 * time.Hour), Action: "rollback", Comment: "rollback to 3f2a"},
	}
	if _, ok, err := s.CurrentPolicy(ctx); ok || err != nil {
		t.Fatalf("CurrentPolicy of an empty history: ok %v, %v", ok, err)
	}
	for i, v := range pv {
		if err := s.PutPolicy(ctx, v); err != nil {
			t.Fatal(err)
		}
		if cur, ok, err := s.CurrentPolicy(ctx); err != nil || !ok || !cmp.Equal(cur, pv[i]) {
			t.Fatalf("CurrentPolicy after %d versions: %+v, %v, %v; want %+v", i+1, cur, ok, err, pv[i])
		}
	}
	if err := s.PutPolicy(ctx, PolicyVersion{Version: "x", Action: "delete"}); err == nil {
		t.Error("PutPolicy accepted Action delete")
	}
	st := []NodeStatus{
		{Node: srcB, Replica: "cp-1", Connected: true, Acked: "3f2a", Updated: t0},
		{Node: srcA, Replica: "cp-1", Connected: true, Acked: "3f2a", Updated: t0},
		{Node: srcA, Replica: "cp-2", Connected: false, Acked: "3f2a", Nacked: "9c1d", NackReason: "unknown kind", Updated: t0.Add(time.Minute)},
	}
	for _, x := range st {
		if err := s.PutStatus(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s Store) {
		t.Helper()
		gotP, err := s.Policies(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(pv, gotP); diff != "" {
			t.Errorf("policies (-want +got):\n%s", diff)
		}
		cur, ok, err := s.CurrentPolicy(ctx)
		if err != nil || !ok {
			t.Fatalf("CurrentPolicy: ok %v, %v", ok, err)
		}
		if diff := cmp.Diff(pv[len(pv)-1], cur); diff != "" {
			t.Errorf("current policy (-want +got):\n%s", diff)
		}
		gotS, err := s.Statuses(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]NodeStatus{st[2], st[0]}, gotS); diff != "" {
			t.Errorf("statuses (-want +got):\n%s", diff)
		}
	}
	check(s)
	ro, err := Open(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	check(ro)
	ro.Close()
	mustClose(t, s)
	s = openStore(t, url, testKey("k"), 0)
	defer mustClose(t, s)
	check(s)
}

func testCheckpoints(t *testing.T, b backend) {
	ctx := context.Background()
	url := b.url(t)
	key := testKey("k")
	s := openStore(t, url, key, 10)
	for i := 0; i < 5; i++ {
		mustAppend(t, s, events(srcA, 1+5*i, 5))
	}
	cps, err := s.Checkpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := indexes(cps); !slices.Equal(got, []uint64{10, 20}) {
		t.Errorf("periodic checkpoints at %v, want [10 20]", got)
	}
	if err := s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, events(srcA, 26, 2))
	mustClose(t, s)
	s = openStore(t, url, key, 10)
	defer mustClose(t, s)
	cps, _ = s.Checkpoints(ctx)
	if got := indexes(cps); !slices.Equal(got, []uint64{10, 20, 25, 27}) {
		t.Errorf("checkpoints at %v, want [10 20 25 27] (periodic, explicit, on close)", got)
	}
	for _, c := range cps {
		if !VerifyCheckpoint(c, PublicKey(key)) || !bytes.Equal(c.PublicKey, PublicKey(key)) {
			t.Errorf("checkpoint %d does not verify", c.Index)
		}
	}
	rep, err := Verify(ctx, s, PublicKey(key))
	if err != nil || !rep.OK() || rep.Signed != 27 || rep.Unsigned() != 0 || rep.Checkpoints != 4 {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
	// Close without new entries adds no checkpoint.
	ro, _ := Open(ctx, url, nil)
	defer ro.Close()
	if _, err := Verify(ctx, ro, PublicKey(key)[:5]); err == nil {
		t.Error("Verify accepted a short public key")
	}
	if err := ro.Checkpoint(ctx); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only Checkpoint = %v", err)
	}
}

func indexes(cps []Checkpoint) []uint64 {
	var out []uint64
	for _, c := range cps {
		out = append(out, c.Index)
	}
	return out
}

func testTampering(t *testing.T, b backend) {
	ctx := context.Background()
	key := testKey("k")
	other := testKey("mallory")
	// rehash recomputes hashes from entry i on, as a careful forger would.
	rehash := func(es []Entry, from int) {
		for i := from; i < len(es); i++ {
			if i > 0 {
				es[i].Prev = es[i-1].Hash
			}
			es[i].Hash = EntryHash(&es[i])
		}
	}
	type want struct {
		kind  ProblemKind
		index uint64
	}
	for _, tc := range []struct {
		name         string
		entries      func([]Entry) []Entry
		cps          func([]Checkpoint) []Checkpoint
		want         []want
		embeddedOnly bool
	}{
		{
			name: "edited record",
			entries: func(es []Entry) []Entry {
				es[4].Record = []byte(`{"verdict":"allow"}`)
				return es
			},
			want: []want{{ProblemHash, 5}},
		},
		{
			name: "edited record with its hash recomputed",
			entries: func(es []Entry) []Entry {
				es[4].Record = []byte(`{"verdict":"allow"}`)
				es[4].Hash = EntryHash(&es[4])
				return es
			},
			want: []want{{ProblemPrev, 6}},
		},
		{
			name: "edited and the whole tail rechained",
			entries: func(es []Entry) []Entry {
				es[4].Record = []byte(`{"verdict":"allow"}`)
				rehash(es, 4)
				return es
			},
			want: []want{{ProblemCheckpoint, 10}, {ProblemCheckpoint, 12}},
		},
		{
			name: "inserted record",
			entries: func(es []Entry) []Entry {
				fake := Entry{Index: 4, Received: es[2].Received, Event: Event{Source: srcB, Seq: 99, Record: []byte(`{}`)}, Prev: es[2].Hash}
				fake.Hash = EntryHash(&fake)
				out := append(slices.Clone(es[:3]), fake)
				for _, e := range es[3:] {
					e.Index++
					out = append(out, e)
				}
				return out
			},
			// Every entry after it has a new index, so a new hash; the
			// checkpoints now name other entries.
			want: append([]want{{ProblemHash, 5}, {ProblemPrev, 5}, {ProblemHash, 6}, {ProblemHash, 7}, {ProblemHash, 8},
				{ProblemHash, 9}, {ProblemHash, 10}, {ProblemHash, 11}, {ProblemHash, 12}, {ProblemHash, 13}},
				want{ProblemCheckpoint, 10}, want{ProblemCheckpoint, 12}),
		},
		{
			name:         "inserted record with a repeated index",
			embeddedOnly: true, // a primary key keeps it out of PostgreSQL
			entries: func(es []Entry) []Entry {
				fake := Entry{Index: 3, Received: es[2].Received, Event: Event{Source: srcB, Seq: 99, Record: []byte(`{}`)}, Prev: es[1].Hash}
				fake.Hash = EntryHash(&fake)
				return slices.Insert(es, 3, fake)
			},
			want: []want{{ProblemOrder, 3}, {ProblemPrev, 3}, {ProblemPrev, 4}},
		},
		{
			name:    "deleted middle record",
			entries: func(es []Entry) []Entry { return slices.Delete(es, 6, 7) },
			want:    []want{{ProblemGap, 7}, {ProblemPrev, 8}},
		},
		{
			name:    "truncated tail after a checkpoint",
			entries: func(es []Entry) []Entry { return es[:8] },
			want:    []want{{ProblemTruncated, 10}, {ProblemTruncated, 12}},
		},
		{
			name: "forged checkpoint",
			cps: func(cps []Checkpoint) []Checkpoint {
				return append(cps, signCheckpoint(other, 12, make([]byte, 32), time.Unix(1, 0)))
			},
			want: []want{{ProblemSignature, 12}},
		},
		{
			name: "checkpoint altered to fit a rewritten chain",
			cps: func(cps []Checkpoint) []Checkpoint {
				cps[0].Hash = bytes.Repeat([]byte{1}, 32)
				return cps
			},
			want: []want{{ProblemSignature, 10}},
		},
		{
			name: "several at once",
			entries: func(es []Entry) []Entry {
				es[1].Record = []byte(`{}`)
				return slices.Delete(es, 8, 9)
			},
			want: []want{{ProblemHash, 2}, {ProblemGap, 9}, {ProblemPrev, 10}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.embeddedOnly && b.name != "embedded" {
				t.Skip("not possible in this backend")
			}
			url := b.url(t)
			s := openStore(t, url, key, 10)
			mustAppend(t, s, events(srcA, 1, 10))
			mustAppend(t, s, events(srcA, 11, 2))
			mustClose(t, s) // checkpoints at 10 (periodic) and 12 (close)
			if rep, err := Verify(ctx, reopenRO(t, url), PublicKey(key)); err != nil || !rep.OK() {
				t.Fatalf("untouched store: Verify = %+v, %v", rep, err)
			}
			b.rewrite(t, url, tc.entries, tc.cps)
			rep, err := Verify(ctx, reopenRO(t, url), PublicKey(key))
			if err != nil {
				t.Fatal(err)
			}
			var got []want
			for _, p := range rep.Problems {
				got = append(got, want{p.Kind, p.Index})
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("problems (-want +got):\n%s\nreport: %v", diff, rep.Problems)
			}
		})
	}
	// The wrong public key fails every checkpoint.
	url := b.url(t)
	s := openStore(t, url, key, 5)
	mustAppend(t, s, events(srcA, 1, 5))
	mustAppend(t, s, events(srcA, 6, 5))
	mustClose(t, s)
	rep, err := Verify(ctx, reopenRO(t, url), PublicKey(other))
	if err != nil || len(rep.Problems) != 2 || rep.Problems[0].Kind != ProblemSignature || rep.Signed != 0 {
		t.Errorf("Verify under another key = %+v, %v", rep, err)
	}
}

func reopenRO(t *testing.T, url string) Store {
	t.Helper()
	s, err := Open(context.Background(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testReadOnly(t *testing.T, b backend) {
	ctx := context.Background()
	url := b.url(t)
	w := openStore(t, url, testKey("k"), 0)
	defer mustClose(t, w)
	mustAppend(t, w, events(srcA, 1, 3))
	r := reopenRO(t, url)
	for name, err := range map[string]error{
		"Append":     r.Append(ctx, events(srcA, 4, 1)),
		"Checkpoint": r.Checkpoint(ctx),
		"PutPolicy":  r.PutPolicy(ctx, PolicyVersion{Version: "v", Action: "apply"}),
		"PutStatus":  r.PutStatus(ctx, NodeStatus{Node: srcA}),
	} {
		if !errors.Is(err, ErrReadOnly) {
			t.Errorf("read-only %s = %v, want ErrReadOnly", name, err)
		}
	}
	// The reader sees what the writer commits while the writer runs.
	mustAppend(t, w, events(srcA, 4, 2))
	if got := mustQuery(t, r, Filter{}); len(got) != 5 {
		t.Errorf("reader sees %d entries, want 5", len(got))
	}
	if hw, err := r.HighWater(ctx, srcA); err != nil || hw != 5 {
		t.Errorf("reader HighWater = %d, %v", hw, err)
	}
}

func testConcurrent(t *testing.T, b backend) {
	ctx := context.Background()
	s := openStore(t, b.url(t), testKey("k"), 50)
	defer mustClose(t, s)
	const writers, batches, per = 6, 10, 7
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			src := fmt.Sprintf("spiffe://hospital.example/sidecar/%d", w)
			for i := range batches {
				// Every batch is sent twice, as after a lost acknowledgement.
				for range 2 {
					if err := s.Append(ctx, events(src, 1+i*per, per)); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	rep, err := Verify(ctx, s, PublicKey(testKey("k")))
	if err != nil || !rep.OK() || rep.Head != writers*batches*per {
		t.Errorf("Verify = %+v, %v; want OK with head %d", rep, err, writers*batches*per)
	}
}
