package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/identity/devca"
	"github.com/medgate/medgate/proxy"
)

// profileInProcess runs the medgate-tcp configuration inside this process:
// an outbound and an inbound proxy.Server with the sidecar's settings (JSON
// logs to a file, metrics registered, access events logged), the sink and
// the load client. It writes Go profiles of the figures' workloads to dir:
// cpu-bulk.pprof, cpu-rr.pprof and cpu-conns.pprof, and, with o.idle
// connections held open after a collection, heap-idle.pprof and
// goroutine-idle.txt. The load and the sink are in the profiles too, under
// package main.
func profileInProcess(ctx context.Context, o options, dir string, stdout io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	work, sink, pki, done, err := setup("medgate-profile")
	if err != nil {
		return err
	}
	defer done()
	logf, err := os.Create(filepath.Join(work, "sidecars.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	log := slog.New(slog.NewJSONHandler(logf, nil))
	events := func(e proxy.Event) { log.Info("access event", "event", e) }
	source := func(svidDir string) (*identity.FileSource, error) {
		return identity.NewFileSource(identity.FileConfig{
			CertFile: filepath.Join(svidDir, devca.SVIDFile), KeyFile: filepath.Join(svidDir, devca.KeyFile), Bundles: []string{pki.bundle},
		}, log)
	}
	inSrc, err := source(pki.server)
	if err != nil {
		return err
	}
	outSrc, err := source(pki.client)
	if err != nil {
		return err
	}
	inAddr, outAddr, err := pairPorts()
	if err != nil {
		return err
	}
	allow, err := identity.ParsePatterns("spiffe://bench.example/client")
	if err != nil {
		return err
	}
	in, err := proxy.New(proxy.Config{Inbound: []proxy.InboundRoute{{Name: "default", Listen: inAddr, Upstream: sink.Addr(), Allow: allow, DisableInnerLayer: true}}},
		proxy.Deps{Source: inSrc, Log: log, Metrics: proxy.NewMetrics(prometheus.NewRegistry()), Events: events})
	if err != nil {
		return err
	}
	out, err := proxy.New(proxy.Config{Outbound: []proxy.OutboundRoute{{Name: "default", Listen: outAddr, Peer: inAddr,
		PeerID: spiffeid.RequireFromString("spiffe://bench.example/server"), RemoteRoute: "default", DisableInnerLayer: true}}},
		proxy.Deps{Source: outSrc, Log: log, Metrics: proxy.NewMetrics(prometheus.NewRegistry()), Events: events})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- in.Run(ctx) }()
	go func() { errc <- out.Run(ctx) }()
	if err := waitReady(outAddr); err != nil {
		return err
	}
	cpu := func(name string, work func() error) error {
		f, err := os.Create(filepath.Join(dir, "cpu-"+name+".pprof"))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		start := time.Now()
		err = work()
		pprof.StopCPUProfile()
		fmt.Fprintf(stdout, "profile %-6s %.1f s\n", name, time.Since(start).Seconds())
		return err
	}
	if err := cpu("bulk", func() error {
		for range o.rounds {
			if _, err := bulk(outAddr, o.bulk); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := cpu("rr", func() error {
		for range o.rounds {
			if _, err := roundTrips(outAddr, o.rr); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := cpu("conns", func() error {
		for range o.rounds {
			if _, err := connRate(outAddr, o.conns); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if o.idle > 0 {
		// Fine enough to account for an idle connection's few KiB, and
		// only now: sampling this finely slows what the CPU profiles time.
		runtime.MemProfileRate = 1 << 10
		defer sink.release()
		memNow := func() runtime.MemStats {
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			return m
		}
		m0, g0 := memNow(), runtime.NumGoroutine()
		c := &config{name: "medgate-tcp", entry: outAddr}
		conns, err := openIdle(c, sink, o.idle)
		defer func() {
			for _, cc := range conns {
				cc.Close()
			}
		}()
		if err != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond)
		m := memNow()
		n := float64(o.idle)
		fmt.Fprintf(stdout, "profile idle   per connection, after a collection: heap in use %.1f KiB (%.0f objects), stacks %.1f KiB, %.1f goroutines (both proxies, the sink's end and the load's)\n",
			(float64(m.HeapInuse)-float64(m0.HeapInuse))/1024/n, (float64(m.HeapObjects)-float64(m0.HeapObjects))/n,
			(float64(m.StackInuse)-float64(m0.StackInuse))/1024/n, float64(runtime.NumGoroutine()-g0)/n)
		for name, debug := range map[string]int{"heap-idle.pprof": 0, "goroutine-idle.txt": 1} {
			f, err := os.Create(filepath.Join(dir, name))
			if err != nil {
				return err
			}
			prof := "heap"
			if debug == 1 {
				prof = "goroutine"
			}
			err = pprof.Lookup(prof).WriteTo(f, debug)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	cancel()
	for range 2 {
		if err := <-errc; err != nil {
			return err
		}
	}
	return nil
}
