// Command bench runs medgate's system benchmarks side by side with
// baselines on this machine and writes a JSON and a Markdown report.
//
// Every configuration is a pair of proxies between a load client and a
// sink on loopback, measured in interleaved rounds so that a busy machine
// hurts all of them alike. Figures are judged as ratios against a baseline
// measured in the same run, never as absolute times; only the control
// plane's, whose targets are absolute (a policy change on 1,000 sidecars,
// events committed per second), are judged on their own.
//
//	go run ./bench -bin bin/medgate -out bench/results
//	go run ./bench -only controlplane
//	go run ./bench -check bench/results/latest.json
//	go run ./bench -bounds -only go-tls,haproxy,medgate-tcp -out /tmp/bounds
//	go run ./bench -profile /tmp/profiles -rounds 1
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "sink" || os.Args[1] == "load") {
		// Re-executed inside a network namespace of the lossy link.
		run := runSinkMode
		if os.Args[1] == "load" {
			run = runLoadMode
		}
		if err := run(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, os.Args[1]+":", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "relay" {
		// Re-executed as the plain Go relay baseline.
		if err := runRelay(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "relay:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	bin         string
	out         string
	rounds      int
	bulk        int64
	rr          int
	idle        int
	conns       int
	lossy       bool
	lossyN      int
	lossySize   int64
	lossyRounds int
	lossyRTT    time.Duration
	lossyLoss   float64
	lossyMbps   float64
	smallN      int
	smallSize   int64
	smallRounds int
	seqN        int
	dicomMiB    int64
	dicomRounds int
	cpSidecars  int
	cpIngest    time.Duration
	check       string
	only        string
	duration    time.Duration
	bounds      bool
	compare     string
	resume      bool // the peers resume TLS sessions, as they ship
	profile     string
	stats       bool // serve the Go proxies' runtime memory figures
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.bin, "bin", "bin/medgate", "medgate binary")
	fs.StringVar(&o.out, "out", "bench/results", "directory for latest.json and latest.md")
	fs.IntVar(&o.rounds, "rounds", 5, "interleaved rounds per figure")
	bulkMiB := fs.Int("bulk-mib", 1024, "MiB per bulk throughput run")
	fs.IntVar(&o.rr, "rr", 2000, "100-byte round trips per latency run")
	fs.IntVar(&o.idle, "idle", 2000, "idle proxied connections for the memory figure")
	fs.IntVar(&o.conns, "conns", 300, "new connections per connection-rate run")
	fs.BoolVar(&o.lossy, "lossy", true, "compare QUIC and TCP over an emulated 100 ms RTT, 1% loss link (needs root and ip netns; skipped otherwise)")
	fs.IntVar(&o.lossyN, "lossy-n", 50, "parallel objects per lossy-link round")
	lossyMiB := fs.Int("lossy-mib", 1, "MiB per object on the lossy link")
	fs.IntVar(&o.lossyRounds, "lossy-rounds", 1, "rounds on the lossy link (a QUIC round can take minutes)")
	fs.DurationVar(&o.lossyRTT, "lossy-rtt", 100*time.Millisecond, "round-trip time of the emulated link")
	fs.Float64Var(&o.lossyLoss, "lossy-loss", 0.01, "packet loss of the emulated link, each way")
	fs.Float64Var(&o.lossyMbps, "lossy-mbps", 100, "bandwidth of the emulated link, each way")
	fs.IntVar(&o.smallN, "lossy-small-n", 50, "parallel small objects per round on the lossy link, each on a new proxied connection (0 skips them)")
	smallKiB := fs.Int("lossy-small-kib", 16, "KiB per small object on the lossy link")
	fs.IntVar(&o.smallRounds, "lossy-small-rounds", 3, "rounds of small objects on the lossy link, parallel and sequential")
	fs.IntVar(&o.seqN, "lossy-seq-n", 20, "small objects sent one after another per round on the lossy link, each on a new proxied connection (0 skips them)")
	fs.Int64Var(&o.dicomMiB, "dicom-mib", 512, "MiB of pixel data in the masked-DICOM C-STORE figure (0 skips it)")
	fs.IntVar(&o.dicomRounds, "dicom-rounds", 3, "rounds of the masked-DICOM figure")
	fs.IntVar(&o.cpSidecars, "cp-sidecars", 1000, "in-process sidecars on one control plane for the policy fan-out and memory figures (0 skips them)")
	fs.DurationVar(&o.cpIngest, "cp-ingest", 5*time.Second, "length of a round of the control plane's event ingest figures (0 skips them)")
	fs.StringVar(&o.check, "check", "", "only check the ratios in this results file against their targets")
	fs.StringVar(&o.only, "only", "", "run only configurations whose name contains this (or any of these, comma-separated); controlplane runs only the control plane's figures and replaces them in the results file in -out")
	fs.DurationVar(&o.duration, "max", 30*time.Minute, "stop after this long in all")
	fs.BoolVar(&o.resume, "peer-resumption", false, "leave TLS session resumption on in the stunnel, HAProxy and nginx pairs, as they ship (by default it is off, so that they do the full handshake medgate does)")
	fs.StringVar(&o.compare, "compare", "", "also run the medgate-tcp configuration with this medgate binary, as medgate-tcp-compare, in the same interleaved rounds")
	fs.StringVar(&o.profile, "profile", "", "run the medgate-tcp configuration inside this process and write Go CPU, heap and goroutine profiles of its workloads to this directory")
	fs.BoolVar(&o.bounds, "bounds", false, "measure what bounds each figure instead (CPU split, system calls, context switches, memory per idle connection, from /proc); writes bounds.json and bounds.md in -out")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.bulk = int64(*bulkMiB) << 20
	o.lossySize = int64(*lossyMiB) << 20
	o.smallSize = int64(*smallKiB) << 10
	if o.check != "" {
		return check(o.check, stdout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.duration)
	defer cancel()
	if o.profile != "" {
		return profileInProcess(ctx, o, o.profile, stdout)
	}
	if o.bounds {
		if err := measureBounds(ctx, o, stdout); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nwrote %s and %s\n", filepath.Join(o.out, "bounds.json"), filepath.Join(o.out, "bounds.md"))
		return nil
	}
	measureFn := measure
	if o.only == "controlplane" {
		measureFn = measureControlPlane
	}
	res, err := measureFn(ctx, o, stdout)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(o.out, "latest.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := writeReport(res, o.out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nwrote %s and %s\n", filepath.Join(o.out, "latest.json"), filepath.Join(o.out, "latest.md"))
	printRatios(res, stdout)
	return nil
}

// Results is the JSON document a run writes.
type Results struct {
	Time    time.Time           `json:"time"`
	Host    string              `json:"host"`
	Rounds  int                 `json:"rounds"`
	Figures map[string][]Figure `json:"figures"` // by figure name, one per configuration
	Ratios  []Ratio             `json:"ratios"`
	Notes   []string            `json:"notes,omitempty"`
}

// Figure is one measured quantity of one configuration.
type Figure struct {
	Config  string    `json:"config"`
	Unit    string    `json:"unit"`
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Samples []float64 `json:"samples"`
}

// Ratio is how a figure of one configuration compares with another's in
// the same run, and the target it is judged by. Without Against, Value is
// the figure itself against an absolute target.
type Ratio struct {
	Name     string  `json:"name"`
	Figure   string  `json:"figure"`
	Of       string  `json:"of"`
	Against  string  `json:"against,omitempty"`
	Value    float64 `json:"value"`
	Target   float64 `json:"target"`
	HigherOK bool    `json:"higher_is_better"`
	Pass     bool    `json:"pass"`
}

// meets reports whether v meets target. A target of 0 is none: the
// figure or ratio is for information and always passes.
func meets(v, target float64, higher bool) bool {
	return target == 0 || higher && v >= target || !higher && v <= target
}

func summarize(config, unit string, samples []float64) Figure {
	s := append([]float64(nil), samples...)
	sort.Float64s(s)
	f := Figure{Config: config, Unit: unit, Samples: samples}
	if len(s) > 0 {
		f.Min, f.Max = s[0], s[len(s)-1]
		f.Median = s[len(s)/2]
		if len(s)%2 == 0 {
			f.Median = (s[len(s)/2-1] + s[len(s)/2]) / 2
		}
	}
	return f
}

func check(path string, stdout io.Writer) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	printRatios(&res, stdout)
	var failed int
	for _, r := range res.Ratios {
		if !r.Pass {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d ratios below target", failed, len(res.Ratios))
	}
	return nil
}

func printRatios(res *Results, w io.Writer) {
	fmt.Fprintln(w, "\nratios (same run):")
	for _, r := range res.Ratios {
		verdict := "ok"
		if !r.Pass {
			verdict = "BELOW TARGET"
		}
		cmp := ">="
		if !r.HigherOK {
			cmp = "<="
		}
		target := fmt.Sprintf("target %s %.2f", cmp, r.Target)
		if r.Target == 0 {
			target, verdict = "no target", ""
		}
		fmt.Fprintf(w, "  %-48s %6.2f  (%s)  %s\n", r.Name, r.Value, target, verdict)
	}
}
