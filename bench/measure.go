package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// config is one way of carrying traffic from the load client to the sink.
type config struct {
	name  string
	entry string   // where the client connects
	pids  []int    // proxy processes, for CPU and memory figures
	stats []string // Go runtime memory figures of the proxies (-bounds only)
	stop  func()
}

func measure(ctx context.Context, o options, stdout io.Writer) (*Results, error) {
	host, _ := os.Hostname()
	res := &Results{Time: time.Now().UTC(), Host: host, Rounds: o.rounds, Figures: map[string][]Figure{}}
	work, sink, pki, done, err := setup("medgate-bench")
	if err != nil {
		return nil, err
	}
	defer done()

	configs, notes, err := startConfigs(ctx, o, sink, pki, work, stdout)
	for _, c := range configs {
		defer c.stop()
	}
	res.Notes = append(res.Notes, notes...)
	if err != nil {
		return nil, err
	}

	for _, c := range configs {
		if c.name == "nginx-pair" {
			res.Notes = append(res.Notes, "nginx-pair: the near side does not verify the far side's certificate (nginx insists on a host name; SVIDs carry none); the far side requires and verifies client certificates")
		}
	}
	if o.resume {
		res.Notes = append(res.Notes, "stunnel, HAProxy and nginx pairs: session resumption on, as they ship: after the first connection their handshakes resume a session and skip the certificates; medgate and the Go TLS pair do a full handshake every time")
	} else {
		res.Notes = append(res.Notes, "stunnel, HAProxy and nginx pairs: session resumption off (stunnel sessionResume = no; HAProxy no-tls-tickets, no-ssl-reuse; nginx ssl_session_tickets off, proxy_ssl_session_reuse off), so that every connection is a full mutual-TLS handshake, as medgate's and the Go TLS pair's are; -peer-resumption measures them as they ship")
	}
	type series struct{ tput, cpu, p50, p99, rate []float64 }
	data := map[string]*series{}
	for _, c := range configs {
		data[c.name] = &series{}
	}
	for round := 1; round <= o.rounds; round++ {
		for _, c := range configs {
			if ctx.Err() != nil {
				return nil, errors.New("out of time")
			}
			cpu0 := cpuSeconds(c.pids)
			d, err := bulk(c.entry, o.bulk)
			if err != nil {
				return nil, fmt.Errorf("%s bulk: %w", c.name, err)
			}
			cpu := cpuSeconds(c.pids) - cpu0
			s := data[c.name]
			s.tput = append(s.tput, float64(o.bulk)/d.Seconds()/1e6)
			if len(c.pids) > 0 {
				s.cpu = append(s.cpu, cpu/(float64(o.bulk)/(1<<30)))
			}
			lat, err := roundTrips(c.entry, o.rr)
			if err != nil {
				return nil, fmt.Errorf("%s round trips: %w", c.name, err)
			}
			s.p50 = append(s.p50, percentile(lat, 0.50))
			s.p99 = append(s.p99, percentile(lat, 0.99))
			if c.name != "direct" {
				rate, err := connRate(c.entry, o.conns)
				if err != nil {
					return nil, fmt.Errorf("%s connection rate: %w", c.name, err)
				}
				s.rate = append(s.rate, rate)
			}
			fmt.Fprintf(stdout, "round %d %-14s %8.0f MB/s  p50 %6.1f µs  p99 %6.1f µs\n", round, c.name, s.tput[len(s.tput)-1], s.p50[len(s.p50)-1], s.p99[len(s.p99)-1])
		}
	}
	for _, c := range configs {
		s := data[c.name]
		res.Figures["throughput"] = append(res.Figures["throughput"], summarize(c.name, "MB/s", s.tput))
		res.Figures["rr_p50"] = append(res.Figures["rr_p50"], summarize(c.name, "µs", s.p50))
		res.Figures["rr_p99"] = append(res.Figures["rr_p99"], summarize(c.name, "µs", s.p99))
		if len(s.cpu) > 0 {
			res.Figures["cpu_per_gib"] = append(res.Figures["cpu_per_gib"], summarize(c.name, "CPU s/GiB", s.cpu))
		}
		if len(s.rate) > 0 {
			res.Figures["new_conns_per_s"] = append(res.Figures["new_conns_per_s"], summarize(c.name, "connections/s", s.rate))
		}
	}
	// The record format against raw AES-256-GCM, one core, interleaved.
	var seal, open, rawSeal, rawOpen []float64
	for range o.rounds {
		a, b, c, d, err := cryptoRound(time.Second)
		if err != nil {
			return nil, fmt.Errorf("crypto: %w", err)
		}
		seal, open, rawSeal, rawOpen = append(seal, a), append(open, b), append(rawSeal, c), append(rawOpen, d)
	}
	fmt.Fprintf(stdout, "crypto seal %.0f MB/s (raw %.0f), open %.0f MB/s (raw %.0f), one core, median\n",
		summarize("", "", seal).Median, summarize("", "", rawSeal).Median, summarize("", "", open).Median, summarize("", "", rawOpen).Median)
	res.Figures["crypto_mbps"] = []Figure{summarize("stream-seal", "MB/s", seal), summarize("raw-gcm-seal", "MB/s", rawSeal),
		summarize("stream-open", "MB/s", open), summarize("raw-gcm-open", "MB/s", rawOpen)}
	// A large DICOM C-STORE, masked against unmasked.
	if o.dicomMiB > 0 {
		if err := dicomFigures(ctx, o, pki, work, res, stdout); err != nil {
			res.Notes = append(res.Notes, "masked DICOM: "+err.Error())
			fmt.Fprintf(stdout, "skip masked DICOM: %v\n", err)
		}
	}
	// HL7 messages per second, masked against unmasked.
	if o.dicomMiB > 0 {
		if err := hl7Figures(ctx, o, pki, work, res, stdout); err != nil {
			res.Notes = append(res.Notes, "masked HL7: "+err.Error())
			fmt.Fprintf(stdout, "skip masked HL7: %v\n", err)
		}
	}
	// The control plane: policy fan-out, memory per sidecar, event ingest.
	controlPlaneFigures(ctx, o, work, res, stdout)
	// QUIC against TCP over an emulated long, lossy link.
	if o.lossy {
		if err := lossyFigures(ctx, o, pki, work, res, stdout); err != nil {
			res.Notes = append(res.Notes, "lossy link: "+err.Error())
			fmt.Fprintf(stdout, "skip lossy link: %v\n", err)
		}
	}
	// Memory per idle proxied connection, one configuration at a time.
	for _, c := range configs {
		if len(c.pids) == 0 || o.idle == 0 {
			continue
		}
		kib, err := idleMemory(c, sink, o.idle)
		if err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("%s idle memory: %v", c.name, err))
			continue
		}
		fmt.Fprintf(stdout, "idle   %-14s %8.1f KiB per proxied connection (both proxies)\n", c.name, kib)
		res.Figures["idle_kib_per_conn"] = append(res.Figures["idle_kib_per_conn"], summarize(c.name, "KiB", []float64{kib}))
	}

	peers := []string{"go-tls-pair", "stunnel-pair", "haproxy-pair", "nginx-pair"}
	// bestPeer is the peer with the best median of figure in this run.
	bestPeer := func(figure string, higher bool) string {
		best, bestV := "", 0.0
		for _, p := range peers {
			f := find(res, figure, p)
			if f == nil || f.Median == 0 {
				continue
			}
			if best == "" || higher && f.Median > bestV || !higher && f.Median < bestV {
				best, bestV = p, f.Median
			}
		}
		return best
	}
	ratio := func(name, figure, of, against string, target float64, higher bool) {
		if against == "best-peer" {
			against = bestPeer(figure, higher)
			name = strings.Replace(name, "best peer", "best peer ("+against+")", 1)
		}
		a, b := find(res, figure, of), find(res, figure, against)
		if a == nil || b == nil || b.Median == 0 {
			return
		}
		v := a.Median / b.Median
		res.Ratios = append(res.Ratios, Ratio{Name: name, Figure: figure, Of: of, Against: against, Value: v, Target: target, HigherOK: higher, Pass: meets(v, target, higher)})
	}
	// The targets of the benchmark issue, against the best peer in this run.
	ratio("throughput medgate-tcp / best peer", "throughput", "medgate-tcp", "best-peer", 1.2, true)
	ratio("throughput medgate-inner / best peer", "throughput", "medgate-inner", "best-peer", 1.0, true)
	ratio("rr p99 medgate-tcp / best peer", "rr_p99", "medgate-tcp", "best-peer", 1.0, false)
	ratio("idle KiB/conn medgate-tcp / best peer", "idle_kib_per_conn", "medgate-tcp", "best-peer", 1.0, false)
	ratio("new conns/s medgate-tcp / best peer", "new_conns_per_s", "medgate-tcp", "best-peer", 1.0, true)
	ratio("cpu per GiB medgate-tcp / best peer", "cpu_per_gib", "medgate-tcp", "best-peer", 1.0, false)
	// The inner layer against TLS only (second encryption layer issue).
	ratio("throughput medgate-inner / medgate-tcp", "throughput", "medgate-inner", "medgate-tcp", 0.8, true)
	ratio("seal / raw AES-256-GCM seal (one core)", "crypto_mbps", "stream-seal", "raw-gcm-seal", 0.85, true)
	ratio("open / raw AES-256-GCM open (one core)", "crypto_mbps", "stream-open", "raw-gcm-open", 0.85, true)
	// The QUIC and masking targets.
	ratio("lossy link time medgate-quic / medgate-tcp", "lossy_seconds", "medgate-quic", "medgate-tcp", 0.5, false)
	ratio("lossy link time, small objects, medgate-quic / medgate-tcp", "lossy_small_seconds", "medgate-quic", "medgate-tcp", 0.5, false)
	ratio("lossy link time, sequential small objects, medgate-quic / medgate-tcp", "lossy_sequential_seconds", "medgate-quic", "medgate-tcp", 0, false)
	ratio("lossy link time medgate-quic / medgate-tcp-cubic", "lossy_seconds", "medgate-quic", "medgate-tcp-cubic", 0, false)
	ratio("lossy link time, small objects, medgate-quic / medgate-tcp-cubic", "lossy_small_seconds", "medgate-quic", "medgate-tcp-cubic", 0, false)
	ratio("DICOM C-STORE masked / unmasked", "dicom_cstore_mbps", "masked", "unmasked", 0.7, true)
	// For information: no target.
	ratio("HL7 messages/s masked / unmasked", "hl7_messages_per_s", "masked", "unmasked", 0, true)
	ratio("throughput medgate-tcp / direct", "throughput", "medgate-tcp", "direct", 0, true)
	ratio("new conns/s admission with posture / without", "new_conns_per_s", "medgate-posture", "medgate-tcp", 0, true)
	ratio("throughput medgate-quic / medgate-tcp (loopback)", "throughput", "medgate-quic", "medgate-tcp", 0, true)
	ratio("rr p99 medgate-quic / medgate-tcp (loopback)", "rr_p99", "medgate-quic", "medgate-tcp", 0, false)
	ratio("cpu per GiB medgate-inner / medgate-tcp", "cpu_per_gib", "medgate-inner", "medgate-tcp", 0, false)
	return res, nil
}

func find(res *Results, figure, config string) *Figure {
	for i := range res.Figures[figure] {
		if res.Figures[figure][i].Config == config {
			return &res.Figures[figure][i]
		}
	}
	return nil
}

func percentile(v []float64, p float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// contains reports whether s contains any of the comma-separated subs.
func contains(s, subs string) bool {
	for sub := range strings.SplitSeq(subs, ",") {
		if sub != "" && strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// lossyFigures times n parallel objects through a medgate pair over TCP
// and over QUIC across the emulated link, interleaved.
func lossyFigures(ctx context.Context, o options, pki *benchPKI, work string, res *Results, stdout io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root for network namespaces and TUN devices")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("needs ip (iproute2)")
	}
	l := link{delay: o.lossyRTT / 2, loss: o.lossyLoss, rate: o.lossyMbps * 1e6 / 8}
	teardown, err := setupLink(l)
	if err != nil {
		return err
	}
	defer teardown()
	across := fmt.Sprintf("an emulated link of %s RTT, %.1f%% loss each way and %.0f Mbit/s (TUN devices between two network namespaces)", o.lossyRTT, 100*o.lossyLoss, o.lossyMbps)
	// TCP crosses the link under the host's congestion control, which the
	// namespaces inherit, and also under CUBIC when that is not it: quic-go
	// has only CUBIC (or NewReno), so that pair compares like with like.
	hostCC, err := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
	if err != nil {
		return err
	}
	type lossyConfig struct{ name, transport, tcpCC string }
	configs := []lossyConfig{{"medgate-tcp", "tcp", strings.TrimSpace(string(hostCC))}}
	if configs[0].tcpCC != "cubic" {
		// A namespace may only choose what the host allows.
		restore, err := allowCongestionControl("cubic")
		if err != nil {
			return err
		}
		defer restore()
		configs = append(configs, lossyConfig{"medgate-tcp-cubic", "tcp", "cubic"})
	}
	configs = append(configs, lossyConfig{"medgate-quic", "quic", ""})
	scenarios := []struct {
		figure     string
		n          int
		size       int64
		rounds     int
		sequential bool
	}{
		{"lossy_seconds", o.lossyN, o.lossySize, o.lossyRounds, false},
		{"lossy_small_seconds", o.smallN, o.smallSize, o.smallRounds, false},
		{"lossy_sequential_seconds", o.seqN, o.smallSize, o.smallRounds, true},
	}
	for _, sc := range scenarios {
		if sc.n == 0 || sc.size == 0 || sc.rounds == 0 {
			continue
		}
		how := "parallel"
		if sc.sequential {
			how = "sequential"
		}
		times := map[string][]float64{}
		for round := 1; round <= sc.rounds; round++ {
			for _, c := range configs {
				if c.tcpCC != "" {
					for _, ns := range []string{nsClient, nsServer} {
						if err := run_("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_congestion_control="+c.tcpCC); err != nil {
							return err
						}
					}
				}
				secs, err := lossyRound(ctx, o, pki, work, c.transport, sc.n, sc.size, sc.sequential)
				if err != nil {
					return err
				}
				times[c.name] = append(times[c.name], secs)
				fmt.Fprintf(stdout, "lossy  round %d %-17s %d x %d KiB %s in %.2f s (%s RTT, %.1f%% loss, %.0f Mbit/s)\n", round, c.name, sc.n, sc.size>>10, how, secs, o.lossyRTT, 100*o.lossyLoss, o.lossyMbps)
			}
		}
		for _, c := range configs {
			res.Figures[sc.figure] = append(res.Figures[sc.figure], summarize(c.name, "s", times[c.name]))
		}
		res.Notes = append(res.Notes, fmt.Sprintf("%s: %d %s objects of %d KiB, each on a new proxied connection (a new TCP and TLS connection, or a new stream on the one QUIC connection), through a medgate pair across %s; the sidecars start afresh every round. medgate-tcp uses the host's TCP congestion control (%s), medgate-tcp-cubic CUBIC; QUIC uses quic-go's CUBIC (it has no other but NewReno)", sc.figure, sc.n, how, sc.size>>10, across, configs[0].tcpCC))
	}
	return nil
}

// allowCongestionControl adds cc to the congestion controls network
// namespaces may choose, and returns the func that restores the list.
func allowCongestionControl(cc string) (func(), error) {
	const path = "/proc/sys/net/ipv4/tcp_allowed_congestion_control"
	old, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	allowed := strings.Fields(string(old))
	if slices.Contains(allowed, cc) {
		return func() {}, nil
	}
	if err := os.WriteFile(path, []byte(strings.Join(append(allowed, cc), " ")), 0o644); err != nil {
		return nil, fmt.Errorf("allow TCP congestion control %s: %w", cc, err)
	}
	return func() { os.WriteFile(path, old, 0o644) }, nil
}

// errSkip is a configuration's start declining, without a note: it was not
// asked for.
var errSkip = errors.New("not asked for")

// startConfigs starts every configuration o selects and waits until each
// carries a round trip. The caller stops the ones returned, also on error.
func startConfigs(ctx context.Context, o options, sink *sink, pki *benchPKI, work string, stdout io.Writer) ([]*config, []string, error) {
	startMedgatePair := func(ctx context.Context, bin, name, sinkAddr string, pki *benchPKI, work string, inEnv, outEnv []string) (*config, error) {
		var stats []string
		if o.stats {
			a, b, err := pairPorts()
			if err != nil {
				return nil, err
			}
			inEnv, outEnv = append(slices.Clip(inEnv), "MEDGATE_ADMIN_ADDR="+a), append(slices.Clip(outEnv), "MEDGATE_ADMIN_ADDR="+b)
			stats = []string{"http://" + a + "/metrics", "http://" + b + "/metrics"}
		}
		c, err := startMedgatePair(ctx, bin, name, sinkAddr, pki, work, inEnv, outEnv)
		if c != nil {
			c.stats = stats
		}
		return c, err
	}
	setups := []struct {
		name  string
		start func() (*config, error)
	}{
		{"direct", func() (*config, error) { return &config{name: "direct", entry: sink.Addr(), stop: func() {}}, nil }},
		{"go-relay-pair", func() (*config, error) { return startRelayPair(ctx, "go-relay-pair", sink.Addr(), nil, work, o.stats) }},
		{"go-tls-pair", func() (*config, error) { return startRelayPair(ctx, "go-tls-pair", sink.Addr(), pki, work, o.stats) }},
		{"stunnel-pair", func() (*config, error) { return startPeerPair(ctx, "stunnel-pair", sink.Addr(), pki, work, o.resume) }},
		{"haproxy-pair", func() (*config, error) { return startPeerPair(ctx, "haproxy-pair", sink.Addr(), pki, work, o.resume) }},
		{"nginx-pair", func() (*config, error) { return startPeerPair(ctx, "nginx-pair", sink.Addr(), pki, work, o.resume) }},
		{"medgate-tcp", func() (*config, error) {
			env := []string{"MEDGATE_INNER_LAYER=off"}
			return startMedgatePair(ctx, o.bin, "medgate-tcp", sink.Addr(), pki, work, append(env, "MEDGATE_INBOUND_ALLOW=spiffe://bench.example/client"), env)
		}},
		{"medgate-tcp-compare", func() (*config, error) {
			if o.compare == "" {
				return nil, errSkip
			}
			env := []string{"MEDGATE_INNER_LAYER=off"}
			return startMedgatePair(ctx, o.compare, "medgate-tcp-compare", sink.Addr(), pki, work, append(env, "MEDGATE_INBOUND_ALLOW=spiffe://bench.example/client"), env)
		}},
		{"medgate-inner", func() (*config, error) {
			env := []string{"MEDGATE_INNER_LAYER=on", "MEDGATE_KEYRING=" + pki.keyring}
			return startMedgatePair(ctx, o.bin, "medgate-inner", sink.Addr(), pki, work, append(env, "MEDGATE_INBOUND_ALLOW=spiffe://bench.example/client"), env)
		}},
		{"medgate-quic", func() (*config, error) {
			env := []string{"MEDGATE_INNER_LAYER=off"}
			return startMedgatePair(ctx, o.bin, "medgate-quic", sink.Addr(), pki, work,
				append(env, "MEDGATE_INBOUND_ALLOW=spiffe://bench.example/client"), append(env, "MEDGATE_OUTBOUND_TRANSPORT=quic"))
		}},
		{"medgate-posture", func() (*config, error) {
			// TLS only, admission on a policy with a posture profile: the
			// peer's signed token is verified at every new session.
			env := []string{"MEDGATE_INNER_LAYER=off"}
			return startMedgatePair(ctx, o.bin, "medgate-posture", sink.Addr(), pki, work,
				append(env, "MEDGATE_POLICY_FILE="+pki.policy), append(env, "MEDGATE_POSTURE_TOKEN_FILE="+pki.token))
		}},
	}
	var configs []*config
	var notes []string
	for _, s := range setups {
		if o.only != "" && s.name != "direct" && !contains(s.name, o.only) {
			continue
		}
		c, err := s.start()
		if errors.Is(err, errSkip) {
			continue
		}
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s skipped: %v", s.name, err))
			fmt.Fprintf(stdout, "skip %s: %v\n", s.name, err)
			continue
		}
		if err := waitReady(c.entry); err != nil {
			c.stop()
			logs, _ := filepath.Glob(filepath.Join(work, s.name+"-*.log"))
			var tail strings.Builder
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				fmt.Fprintf(&tail, "\n--- %s\n%s", filepath.Base(l), b[max(0, len(b)-2000):])
			}
			return configs, notes, fmt.Errorf("%s: not ready: %w%s", s.name, err, tail.String())
		}
		configs = append(configs, c)
	}

	return configs, notes, nil
}
