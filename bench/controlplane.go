package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/medgate/medgate/controlplane/agent"
	"github.com/medgate/medgate/controlplane/api"
	"github.com/medgate/medgate/controlplane/policyset"
	"github.com/medgate/medgate/controlplane/store/storetest"
	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/identity/devca"
	"github.com/medgate/medgate/posture"
)

// The control plane's targets are absolute, from its benchmark issue: a
// policy change runs on 1,000 sidecars with p99 under a second, and the
// embedded store commits at least 20,000 access events a second.
const (
	cpFanoutP99TargetMS  = 1000
	cpIngestTargetPerSec = 20000

	// cpConverge bounds every wait for sidecars; a figure that does not
	// converge in it fails instead of hanging the run.
	cpConverge = 60 * time.Second

	cpIngestStreams = 20  // sidecars sending events at once
	cpIngestBatch   = 256 // events per message, as the sidecar's shipper sends
	cpIngestWindow  = 8   // messages in flight per stream
	cpRecordSize    = 500 // bytes per access event
)

const (
	cpServerID = "spiffe://bench.example/control-plane"
	cpAdminID  = "spiffe://bench.example/admin"
	cpSidecars = "spiffe://bench.example/sidecar/*"
)

// cpFigurePrefix names every figure this file records, so a run of only
// the control-plane figures can replace them in an existing results file.
const cpFigurePrefix = "cp_"

// measureControlPlane runs only the control-plane figures and merges them
// into the results file in o.out, keeping every other figure as it was.
func measureControlPlane(ctx context.Context, o options, stdout io.Writer) (*Results, error) {
	host, _ := os.Hostname()
	res := &Results{Time: time.Now().UTC(), Host: host, Rounds: o.rounds, Figures: map[string][]Figure{}}
	if b, err := os.ReadFile(filepath.Join(o.out, "latest.json")); err == nil {
		if err := json.Unmarshal(b, res); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(o.out, "latest.json"), err)
		}
		for name := range res.Figures {
			if strings.HasPrefix(name, cpFigurePrefix) {
				delete(res.Figures, name)
			}
		}
		var ratios []Ratio
		for _, r := range res.Ratios {
			if !strings.HasPrefix(r.Figure, cpFigurePrefix) {
				ratios = append(ratios, r)
			}
		}
		res.Ratios = ratios
		var notes []string
		for _, n := range res.Notes {
			if !strings.HasPrefix(n, cpFigurePrefix) {
				notes = append(notes, n)
			}
		}
		res.Notes = notes
		res.Notes = append(res.Notes, fmt.Sprintf("%s*: measured %s, %d rounds, on their own (-only controlplane); the other figures are from the run above",
			cpFigurePrefix, time.Now().UTC().Format("2006-01-02 15:04 UTC"), o.rounds))
	}
	work, err := os.MkdirTemp("", "medgate-bench-cp")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	controlPlaneFigures(ctx, o, work, res, stdout)
	return res, nil
}

// controlPlaneFigures measures the control plane, run as the real binary:
// how long a policy change takes to run on o.cpSidecars sidecars, its
// memory per connected sidecar, and how many access events a second it
// commits into the embedded store and into PostgreSQL. A figure that
// cannot be measured becomes a note.
func controlPlaneFigures(ctx context.Context, o options, work string, res *Results, stdout io.Writer) {
	note := func(what string, err error) {
		res.Notes = append(res.Notes, fmt.Sprintf("%s: %v", what, err))
		fmt.Fprintf(stdout, "skip %s: %v\n", what, err)
	}
	pki, err := newCPPKI(filepath.Join(work, "cp-pki"))
	if err != nil {
		note(cpFigurePrefix+"*", err)
		return
	}
	if o.cpSidecars > 0 {
		if err := fanoutFigures(ctx, o, pki, work, res, stdout); err != nil {
			note("cp_fanout_ms", err)
		}
	}
	if o.cpIngest > 0 {
		if err := ingestFigures(ctx, o, pki, work, res, stdout); err != nil {
			note("cp_ingest_events_per_s", err)
		}
	}
	limit := func(name, figure, of string, target float64, higher bool) {
		f := find(res, figure, of)
		if f == nil {
			return
		}
		res.Ratios = append(res.Ratios, Ratio{Name: name, Figure: figure, Of: of, Value: f.Median, Target: target, HigherOK: higher, Pass: meets(f.Median, target, higher)})
	}
	limit(fmt.Sprintf("cp fan-out p99 ms, %d sidecars", o.cpSidecars), "cp_fanout_ms", "p99", cpFanoutP99TargetMS, false)
	limit("cp ingest events/s, embedded store", "cp_ingest_events_per_s", "embedded", cpIngestTargetPerSec, true)
	limit("cp ingest events/s, PostgreSQL", "cp_ingest_events_per_s", "postgres", 0, true)
	limit("cp KiB RSS per connected sidecar", "cp_kib_per_sidecar", "rss", 0, false)
}

// cpPKI is an in-memory CA for the control plane, its admin and its
// sidecars, with the control plane's SVID written out for the binary.
type cpPKI struct {
	ca     *devca.CA
	bundle *x509bundle.Set
	dir    string // the control plane's svid.pem, svid.key, bundle.pem
}

func newCPPKI(dir string) (*cpPKI, error) {
	ca, err := devca.New(spiffeid.RequireTrustDomainFromString("bench.example"))
	if err != nil {
		return nil, err
	}
	p := &cpPKI{ca: ca, bundle: x509bundle.NewSet(x509bundle.FromX509Authorities(ca.TrustDomain, []*x509.Certificate{ca.Cert})), dir: dir}
	svid, err := ca.Issue(spiffeid.RequireFromString(cpServerID), 24*time.Hour)
	if err != nil {
		return nil, err
	}
	return p, ca.WriteSVID(svid, dir)
}

// source issues an SVID for id and serves it with the CA's bundle.
func (p *cpPKI) source(id string) (identity.Source, error) {
	svid, err := p.ca.Issue(spiffeid.RequireFromString(id), 24*time.Hour)
	if err != nil {
		return nil, err
	}
	return &fixedSource{svid: svid, bundles: p.bundle}, nil
}

// fixedSource is one SVID and a bundle set that never change.
type fixedSource struct {
	svid    *x509svid.SVID
	bundles *x509bundle.Set
}

var _ identity.Source = (*fixedSource)(nil)

func (s *fixedSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

func (s *fixedSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundles.GetX509BundleForTrustDomain(td)
}

// cpProc is a running 'medgate control-plane'.
type cpProc struct {
	cmd     *exec.Cmd
	addr    string
	metrics string // admin endpoint, for /metrics
	log     string
	admin   *grpc.ClientConn
	policy  api.PolicyAdminClient
}

// startCP runs the control plane on storeURL and waits until it answers
// an admin.
func startCP(ctx context.Context, bin, name, storeURL string, pki *cpPKI, work string) (*cpProc, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("medgate binary: %w (run make build)", err)
	}
	addr, metrics, err := pairPorts()
	if err != nil {
		return nil, err
	}
	p := &cpProc{addr: addr, metrics: metrics, log: filepath.Join(work, name+".log")}
	env := []string{
		"MEDGATE_SVID_CERT=" + filepath.Join(pki.dir, devca.SVIDFile),
		"MEDGATE_SVID_KEY=" + filepath.Join(pki.dir, devca.KeyFile),
		"MEDGATE_TRUST_BUNDLE=" + filepath.Join(pki.dir, devca.BundleFile),
		"MEDGATE_CP_LISTEN=" + addr,
		"MEDGATE_CP_STORE=" + storeURL,
		"MEDGATE_CP_AUDIT_KEY=" + filepath.Join(work, name+"-audit.key"),
		"MEDGATE_CP_ADMINS=" + cpAdminID,
		"MEDGATE_CP_SIDECARS=" + cpSidecars,
		"MEDGATE_CP_REPLICA=" + name,
		"MEDGATE_ADMIN_ADDR=" + metrics,
		"MEDGATE_LOG_FORMAT=json",
	}
	if p.cmd, err = startProc(ctx, p.log, bin, env, "control-plane"); err != nil {
		return nil, err
	}
	src, err := pki.source(cpAdminID)
	if err != nil {
		p.stop()
		return nil, err
	}
	if p.admin, err = agent.Dial(addr, src, identity.AllowID(spiffeid.RequireFromString(cpServerID))); err != nil {
		p.stop()
		return nil, err
	}
	p.policy = api.NewPolicyAdminClient(p.admin)
	deadline := time.Now().Add(20 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := p.policy.Status(cctx, &api.StatusRequest{})
		cancel()
		if err == nil {
			return p, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			b, _ := os.ReadFile(p.log)
			return nil, fmt.Errorf("%s not ready: %v\n%s", name, err, b[max(0, len(b)-2000):])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *cpProc) stop() {
	if p.admin != nil {
		p.admin.Close()
	}
	stopAll(p.cmd)()
}

func (p *cpProc) pid() int { return p.cmd.Process.Pid }

// heapInUseKiB reads the Go heap in use from the control plane's /metrics.
// It is not taken after a forced collection, so it includes garbage.
func (p *cpProc) heapInUseKiB() (float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f / 1024, err
		}
	}
	return 0, errors.New("no go_memstats_heap_inuse_bytes in /metrics")
}

// cpPolicy is the policy of one fan-out round: the round number changes
// the admitted client, so each round is a new version for every sidecar.
func cpPolicy(round int) []*api.Document {
	return []*api.Document{{Name: "bench.yaml", Yaml: fmt.Appendf(nil, benchSites+`apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: default}
spec:
  dataClass: records
  allow: ["spiffe://bench.example/client-%d"]
`, round)}}
}

// benchSidecar is one in-process sidecar's agent and when it put the
// awaited version in force.
type benchSidecar struct {
	id    string
	agent *agent.Agent
	want  *atomic.Pointer[string] // shared: the set version awaited
	at    atomic.Int64            // unix nanoseconds it applied want, 0 before
}

// fanoutFigures connects o.cpSidecars agents to one control plane on the
// embedded store, each with its own SVID, cache file and gRPC connection,
// then times policy changes from the admin's Apply call to each sidecar
// putting the new version in force, and to the control plane's status
// showing every sidecar ACKed it.
func fanoutFigures(ctx context.Context, o options, pki *cpPKI, work string, res *Results, stdout io.Writer) error {
	n := o.cpSidecars
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(n)+512 {
		// Go raises the soft limit to the hard one at start; this is the hard one.
		return fmt.Errorf("%d sidecars need about %d file descriptors; RLIMIT_NOFILE is %d (raise it with ulimit -Hn)", n, n+512, lim.Cur)
	}
	dir := filepath.Join(work, "cp-fanout")
	cp, err := startCP(ctx, o.bin, "cp-fanout", filepath.Join(dir, "store"), pki, work)
	if err != nil {
		return err
	}
	defer cp.stop()
	applied, err := cp.policy.Apply(ctx, &api.ApplyRequest{Documents: cpPolicy(0), Comment: "bench round 0"})
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}

	// The control plane's memory with a policy and no sidecar, settled.
	time.Sleep(time.Second)
	rss0 := rssKiB([]int{cp.pid()})
	heap0, heapErr := cp.heapInUseKiB()

	var want atomic.Pointer[string]
	setVersion := func(round int) (string, error) {
		docs := cpPolicy(round)
		set, _, err := policyset.ForNode(policyset.Version(docs), docs, spiffeid.RequireFromString("spiffe://bench.example/sidecar/0000"))
		if err != nil {
			return "", err
		}
		return set.GetVersion(), nil
	}
	v, err := setVersion(0)
	if err != nil {
		return err
	}
	want.Store(&v)

	actx, stopAgents := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopAgents(); wg.Wait() }()
	sidecars := make([]*benchSidecar, n)
	start := time.Now()
	for i := range sidecars {
		sc := &benchSidecar{id: fmt.Sprintf("spiffe://bench.example/sidecar/%04d", i), want: &want}
		src, err := pki.source(sc.id)
		if err != nil {
			return err
		}
		cache := filepath.Join(dir, "sidecars", fmt.Sprintf("%04d", i), "policy.pb")
		if err := os.MkdirAll(filepath.Dir(cache), 0o700); err != nil {
			return err
		}
		sc.agent, err = agent.New(agent.Config{Address: cp.addr, ServerID: identity.Patterns{mustPattern(cpServerID)}, CacheFile: cache},
			agent.Deps{Source: src, Apply: sc.apply})
		if err != nil {
			return err
		}
		sidecars[i] = sc
		wg.Add(2)
		go func() { defer wg.Done(); sc.agent.Run(actx) }()
		// An idle access-event stream, as every sidecar's shipper holds.
		go func() { defer wg.Done(); idleEventStream(actx, sc.agent.Conn()) }()
	}
	defer func() {
		for _, sc := range sidecars {
			if sc != nil {
				sc.agent.Close()
			}
		}
	}()
	if _, err := waitSidecars(ctx, sidecars, start); err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	if _, err := waitStatus(ctx, cp, n, v, start); err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	connect := time.Since(start)
	fmt.Fprintf(stdout, "cp     %d sidecars connected and running %s (%s) in %.1f s\n", n, v, applied.GetVersion(), connect.Seconds())

	// The control plane's memory with every sidecar connected.
	time.Sleep(2 * time.Second)
	rss1 := rssKiB([]int{cp.pid()})
	kib := []Figure{summarize("rss", "KiB", []float64{float64(rss1-rss0) / float64(n)})}
	if heap1, err := cp.heapInUseKiB(); err == nil && heapErr == nil {
		kib = append(kib, summarize("go-heap-inuse", "KiB", []float64{(heap1 - heap0) / float64(n)}))
	}
	res.Figures["cp_kib_per_sidecar"] = kib
	fmt.Fprintf(stdout, "cp     %.1f KiB RSS per connected sidecar (%d -> %d KiB)\n", kib[0].Median, rss0, rss1)

	var rpc, p50, p99, worst, acked, cpuCP, cpuSelf []float64
	for round := 1; round <= o.rounds; round++ {
		v, err := setVersion(round)
		if err != nil {
			return err
		}
		for _, sc := range sidecars {
			sc.at.Store(0)
		}
		want.Store(&v)
		cpu0CP, cpu0Self := cpuSeconds([]int{cp.pid()}), cpuSeconds([]int{os.Getpid()})
		t0 := time.Now()
		if _, err := cp.policy.Apply(ctx, &api.ApplyRequest{Documents: cpPolicy(round), Comment: fmt.Sprintf("bench round %d", round)}); err != nil {
			return fmt.Errorf("apply round %d: %w", round, err)
		}
		applyTook := time.Since(t0)
		lat, err := waitSidecars(ctx, sidecars, t0)
		if err != nil {
			// The figure fails rather than the run: each sidecar that did
			// not follow counts as the whole time limit.
			res.Notes = append(res.Notes, fmt.Sprintf("cp_fanout_ms round %d: %v", round, err))
			fmt.Fprintf(stdout, "cp     round %d: %v\n", round, err)
		}
		// Status is polled only now, so that its load does not slow the
		// fan-out; a sidecar ACKs after putting the version in force.
		ackTook, err := waitStatus(ctx, cp, n, v, t0)
		if err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("cp_fanout_ms round %d: %v", round, err))
			fmt.Fprintf(stdout, "cp     round %d: %v\n", round, err)
			ackTook = cpConverge
		}
		cpuCP = append(cpuCP, cpuSeconds([]int{cp.pid()})-cpu0CP)
		cpuSelf = append(cpuSelf, cpuSeconds([]int{os.Getpid()})-cpu0Self)
		rpc = append(rpc, ms(applyTook))
		p50 = append(p50, percentile(lat, 0.50))
		p99 = append(p99, percentile(lat, 0.99))
		worst = append(worst, percentile(lat, 1))
		acked = append(acked, ms(ackTook))
		fmt.Fprintf(stdout, "cp     round %d policy change on %d sidecars: Apply %4.0f ms, in force p50 %4.0f ms p99 %4.0f ms max %4.0f ms, all ACKed in status %4.0f ms\n",
			round, n, rpc[len(rpc)-1], p50[len(p50)-1], p99[len(p99)-1], worst[len(worst)-1], acked[len(acked)-1])
	}
	res.Figures["cp_fanout_ms"] = []Figure{summarize("apply-rpc", "ms", rpc), summarize("p50", "ms", p50), summarize("p99", "ms", p99),
		summarize("max", "ms", worst), summarize("all-acked-status", "ms", acked)}
	res.Figures["cp_fanout_cpu_s"] = []Figure{summarize("control-plane", "CPU s", cpuCP), summarize("sidecars-in-bench", "CPU s", cpuSelf)}
	res.Notes = append(res.Notes, fmt.Sprintf("cp_fanout_ms: %d in-process sidecars (the agent package: own SVID, cache file and gRPC connection each, plus an idle access-event stream) on one 'medgate control-plane' with the embedded store, over loopback mTLS; "+
		"times from the start of the admin's Apply call to each sidecar putting the new version in force (p50, p99, max over sidecars; median over %d rounds), and to 'policy status' showing every sidecar ACKed it (polled every 50 ms once all are in force); "+
		"connecting all of them took %.1f s. The sidecars share this machine's cores with the control plane: cp_fanout_cpu_s is the CPU time of a change in each process", n, o.rounds, connect.Seconds()))
	res.Notes = append(res.Notes, fmt.Sprintf("cp_kib_per_sidecar: growth of the control plane's VmRSS (and of its Go heap in use, uncollected, from /metrics) from no sidecar to %d connected, divided by %d", n, n))
	return nil
}

func (sc *benchSidecar) apply(p *posture.Policy) {
	if w := sc.want.Load(); p != nil && w != nil && p.Version == *w {
		sc.at.CompareAndSwap(0, time.Now().UnixNano())
	}
}

func mustPattern(s string) identity.Pattern {
	p, err := identity.ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// waitSidecars waits until every sidecar has put the awaited version in
// force and returns each one's latency from t0 in ms. After cpConverge it
// returns an error, counting each sidecar still waiting as cpConverge.
func waitSidecars(ctx context.Context, sidecars []*benchSidecar, t0 time.Time) ([]float64, error) {
	deadline := t0.Add(cpConverge)
	for {
		lat := make([]float64, 0, len(sidecars))
		for _, sc := range sidecars {
			if at := sc.at.Load(); at != 0 {
				lat = append(lat, ms(time.Unix(0, at).Sub(t0)))
			}
		}
		if len(lat) == len(sidecars) {
			return lat, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			got := len(lat)
			for len(lat) < len(sidecars) {
				lat = append(lat, ms(cpConverge))
			}
			return lat, fmt.Errorf("only %d of %d sidecars put the new policy in force within %s", got, len(sidecars), cpConverge)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitStatus polls the control plane's policy status until n sidecars
// ACKed set version v, and returns the time since t0.
func waitStatus(ctx context.Context, cp *cpProc, n int, v string, t0 time.Time) (time.Duration, error) {
	deadline := t0.Add(cpConverge)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := cp.policy.Status(cctx, &api.StatusRequest{})
		cancel()
		took := time.Since(t0)
		ok := 0
		if err == nil {
			for _, s := range st.GetSidecars() {
				if s.GetConnected() && s.GetExpected() == v && s.GetAcked() == v {
					ok++
				}
			}
			if ok >= n {
				return took, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return took, fmt.Errorf("policy status shows %d of %d sidecars ACKed %s after %s (last error: %v)", ok, n, v, cpConverge, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// idleEventStream holds an access-event stream open with nothing to send.
func idleEventStream(ctx context.Context, conn *grpc.ClientConn) {
	for ctx.Err() == nil {
		st, err := api.NewAccessLogClient(conn).Stream(ctx)
		if err == nil {
			for {
				if _, err := st.Recv(); err != nil {
					break
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// ingestFigures measures access events committed per second through the
// AccessLog stream, into the embedded store and into PostgreSQL, in
// interleaved rounds of o.cpIngest each.
func ingestFigures(ctx context.Context, o options, pki *cpPKI, work string, res *Results, stdout io.Writer) error {
	type target struct {
		name  string
		cp    *cpProc
		conns []*grpc.ClientConn
		rates []float64
	}
	var targets []*target
	defer func() {
		for _, t := range targets {
			for _, c := range t.conns {
				c.Close()
			}
			t.cp.stop()
		}
	}()
	add := func(name, storeURL string) error {
		cp, err := startCP(ctx, o.bin, "cp-ingest-"+name, storeURL, pki, work)
		if err != nil {
			return err
		}
		t := &target{name: name, cp: cp}
		targets = append(targets, t)
		for i := range cpIngestStreams {
			src, err := pki.source(fmt.Sprintf("spiffe://bench.example/sidecar/ingest-%02d", i))
			if err != nil {
				return err
			}
			c, err := agent.Dial(cp.addr, src, identity.AllowID(spiffeid.RequireFromString(cpServerID)))
			if err != nil {
				return err
			}
			t.conns = append(t.conns, c)
		}
		return nil
	}
	if err := add("embedded", filepath.Join(work, "cp-ingest", "store")); err != nil {
		return err
	}
	pgURL, stopPG, err := startPostgres()
	if err != nil {
		res.Notes = append(res.Notes, "cp_ingest_events_per_s postgres: "+err.Error())
		fmt.Fprintf(stdout, "skip cp ingest into PostgreSQL: %v\n", err)
	} else {
		defer stopPG()
		if err := add("postgres", pgURL); err != nil {
			return err
		}
	}
	records := benchRecords(1024)
	for round := 1; round <= o.rounds; round++ {
		for _, t := range targets {
			rate, err := ingestRound(ctx, t.conns, records, o.cpIngest)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", t.name, round, err)
			}
			t.rates = append(t.rates, rate)
			fmt.Fprintf(stdout, "cp     round %d ingest %-8s %8.0f events/s committed (%d streams, batches of %d, %d-byte events)\n",
				round, t.name, rate, cpIngestStreams, cpIngestBatch, cpRecordSize)
		}
	}
	for _, t := range targets {
		res.Figures["cp_ingest_events_per_s"] = append(res.Figures["cp_ingest_events_per_s"], summarize(t.name, "events/s", t.rates))
	}
	res.Notes = append(res.Notes, fmt.Sprintf("cp_ingest_events_per_s: %d sidecars' access-event streams (gRPC over loopback mTLS) into 'medgate control-plane', each sending batches of %d events of %d bytes with up to %d batches unacknowledged, for %s a round; "+
		"events counted when the control plane acknowledges them as committed (fsync of the embedded store; a PostgreSQL commit with fsync and synchronous_commit on)",
		cpIngestStreams, cpIngestBatch, cpRecordSize, cpIngestWindow, o.cpIngest))
	return nil
}

// ingestRound sends events on one new stream per connection for d and
// returns the events acknowledged per second, from the first send to the
// last acknowledgement.
func ingestRound(ctx context.Context, conns []*grpc.ClientConn, records [][]byte, d time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, d+cpConverge)
	defer cancel()
	var total atomic.Int64
	var last atomic.Int64
	start := time.Now()
	stopAt := start.Add(d)
	g, ctx := errgroup.WithContext(ctx)
	for _, conn := range conns {
		g.Go(func() error {
			st, err := api.NewAccessLogClient(conn).Stream(ctx)
			if err != nil {
				return err
			}
			first, err := st.Recv()
			if err != nil {
				return err
			}
			seq := first.GetCommitted()
			window := make(chan struct{}, cpIngestWindow)
			sent := make(chan uint64, 1<<16) // top seq of each batch, in order
			done := make(chan error, 1)
			go func() {
				for top := range sent {
					ack, err := st.Recv()
					if err != nil {
						done <- err
						return
					}
					if ack.GetCommitted() != top {
						done <- fmt.Errorf("acknowledged %d, want %d", ack.GetCommitted(), top)
						return
					}
					total.Add(cpIngestBatch)
					now := time.Now().UnixNano()
					for old := last.Load(); now > old && !last.CompareAndSwap(old, now); old = last.Load() {
					}
					<-window
				}
				done <- nil
			}()
			b := &api.EventBatch{Events: make([]*api.Event, cpIngestBatch)}
			for i := range b.Events {
				b.Events[i] = &api.Event{}
			}
			var sendErr error
			for time.Now().Before(stopAt) {
				select {
				case window <- struct{}{}:
				case err := <-done:
					close(sent)
					return errors.Join(err, errors.New("stream ended early"))
				}
				for _, e := range b.Events {
					seq++
					e.Seq, e.Record = seq, records[seq%uint64(len(records))]
				}
				if sendErr = st.Send(b); sendErr != nil {
					break
				}
				sent <- seq
			}
			close(sent)
			if err := <-done; err != nil {
				return err
			}
			if sendErr != nil {
				return sendErr
			}
			return st.CloseSend()
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	took := time.Unix(0, last.Load()).Sub(start)
	return float64(total.Load()) / took.Seconds(), nil
}

// benchRecords makes n distinct access events of cpRecordSize bytes.
func benchRecords(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		r := fmt.Sprintf(`{"time":"2026-03-01T10:00:00.%06dZ","kind":"object","route":"pacs-eu","direction":"outbound",`+
			`"session_id":"s-%08d","local_id":"spiffe://bench.example/sidecar/pacs","peer_id":"spiffe://lab.example/sidecar/store",`+
			`"verdict":"deidentify","reasons":["residency"],"policy_version":"3f2a9c1d","local_jurisdiction":"EU",`+
			`"peer_jurisdiction":"CN","object":{"protocol":"dicom","operation":"C-STORE","patient":"tok_%012d","study_uid":"1.2.826.0.1.%d"}}`,
			i, i, i, i)
		out[i] = []byte(r + strings.Repeat(" ", max(0, cpRecordSize-len(r))))
	}
	return out
}

// startPostgres starts a throwaway, durable PostgreSQL cluster with
// storetest, which is written for tests: clusterTB stands in for the test.
func startPostgres() (url string, stop func(), err error) {
	tb := &clusterTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := storetest.Start(tb, storetest.Options{Durable: true})
		url = c.NewDatabase(tb)
	}()
	<-done
	if tb.ended {
		tb.cleanup()
		return "", nil, errors.New(tb.msg)
	}
	return url, tb.cleanup, nil
}

// clusterTB is the testing.TB storetest is given outside a test. A fatal
// error or a skip records its message and ends the calling goroutine, as
// in a test; cleanup runs the registered cleanups. storetest calls only
// the methods defined here; any other would panic on the nil TB.
type clusterTB struct {
	testing.TB

	mu       sync.Mutex
	cleanups []func()
	msg      string
	ended    bool
}

func (t *clusterTB) Helper()                         {}
func (t *clusterTB) Failed() bool                    { t.mu.Lock(); defer t.mu.Unlock(); return t.ended }
func (t *clusterTB) Logf(format string, args ...any) {}
func (t *clusterTB) Fatal(args ...any)               { t.end(fmt.Sprint(args...)) }
func (t *clusterTB) Fatalf(format string, args ...any) {
	t.end(fmt.Sprintf(format, args...))
}
func (t *clusterTB) Skip(args ...any) { t.end(fmt.Sprint(args...)) }

func (t *clusterTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func (t *clusterTB) end(msg string) {
	t.mu.Lock()
	t.msg, t.ended = msg, true
	t.mu.Unlock()
	runtime.Goexit()
}

func (t *clusterTB) cleanup() {
	t.mu.Lock()
	fs := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
