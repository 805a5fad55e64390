package store

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/medgate/medgate/controlplane/store/storetest"
)

// benchRecord is a typical access event of about 400 bytes.
func benchRecord(seq int) []byte {
	r := fmt.Sprintf(`{"time":"2026-03-01T10:00:00.%06dZ","kind":"object","route":"pacs-eu","direction":"outbound",`+
		`"session_id":"s-%08d","local_id":"spiffe://hospital.example/sidecar/pacs","peer_id":"spiffe://lab.example/sidecar/store",`+
		`"verdict":"deidentify","reasons":["residency"],"policy_version":"3f2a9c1d","local_jurisdiction":"EU",`+
		`"peer_jurisdiction":"CN","object":{"protocol":"dicom","operation":"C-STORE","patient":"tok_%012d","study_uid":"1.2.826.0.1.%d"}}`,
		seq%1000000, seq, seq, seq)
	return []byte(r + strings.Repeat(" ", max(0, 400-len(r))))
}

// BenchmarkAppend measures durable ingest: batches of 500 events of about
// 400 bytes, one Append (one fsync or one commit) each.
func BenchmarkAppend(b *testing.B) {
	b.Run("embedded", func(b *testing.B) {
		benchAppend(b, "file:"+filepath.Join(b.TempDir(), "store"))
	})
	b.Run("postgres", func(b *testing.B) {
		c := storetest.Start(b, storetest.Options{Durable: true})
		benchAppend(b, c.NewDatabase(b))
	})
}

func benchAppend(b *testing.B, url string) {
	const batch = 500
	s, err := Open(context.Background(), url, testKey("bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	seq := 0
	b.SetBytes(batch * 400)
	b.ResetTimer()
	for b.Loop() {
		evs := make([]Event, batch)
		for i := range evs {
			seq++
			evs[i] = Event{Source: "spiffe://hospital.example/sidecar/pacs", Seq: uint64(seq), Record: benchRecord(seq)}
		}
		if err := s.Append(ctx, evs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(seq)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkAppendConcurrent measures group commit: 16 sidecars' streams
// appending batches of 50 at once share fsyncs (embedded) or queue on the
// chain-head lock (PostgreSQL).
func BenchmarkAppendConcurrent(b *testing.B) {
	b.Run("embedded", func(b *testing.B) {
		benchAppendConcurrent(b, "file:"+filepath.Join(b.TempDir(), "store"))
	})
	b.Run("postgres", func(b *testing.B) {
		c := storetest.Start(b, storetest.Options{Durable: true})
		benchAppendConcurrent(b, c.NewDatabase(b))
	})
}

func benchAppendConcurrent(b *testing.B, url string) {
	const batch = 50
	s, err := OpenWith(context.Background(), Config{URL: url, MaxConns: 16}, Deps{Signer: testKey("bench")})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var sources atomic.Int64
	var total atomic.Int64
	b.SetParallelism(8) // 16 goroutines on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		src := fmt.Sprintf("spiffe://hospital.example/sidecar/%d", sources.Add(1))
		seq := 0
		for pb.Next() {
			evs := make([]Event, batch)
			for i := range evs {
				seq++
				evs[i] = Event{Source: src, Seq: uint64(seq), Record: benchRecord(seq)}
			}
			if err := s.Append(ctx, evs); err != nil {
				b.Error(err)
				return
			}
		}
		total.Add(int64(seq))
	})
	b.ReportMetric(float64(total.Load())/b.Elapsed().Seconds(), "events/s")
}
