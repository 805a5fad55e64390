package spool

import (
	"context"
	"testing"
)

// BenchmarkAppend appends 600-byte records from many goroutines at once, as
// a sidecar's connections do, and reports records per second. The spool
// drops its oldest segments when full, so the benchmark runs as long as
// asked with bounded disk use. With SyncCommit the figure depends on the
// disk's fsync latency and on how many Appends share each fsync.
func BenchmarkAppend(b *testing.B) {
	for _, bc := range []struct {
		name string
		sync SyncPolicy
	}{
		{"fsync", SyncCommit},
		{"write", SyncWrite},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := Open(context.Background(), spoolDir(b), newKeyring(b), Options{MaxBytes: 64 << 20, Sync: bc.sync})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			data := payload("bench", 600)
			b.SetParallelism(32) // 32 appenders per CPU
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Append(data, DropOldest); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
