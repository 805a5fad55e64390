package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// The bounds mode (-bounds) says where each configuration's figures come
// from rather than what they are: what a GiB, a round trip, a new
// connection and an idle connection cost its proxy processes, read from
// /proc around the same workloads the figures use. It writes bounds.json
// and bounds.md in -out and leaves latest.* alone.
//
//	go run ./bench -bounds -only go-tls,haproxy,nginx,medgate-tcp -out /tmp/bounds
//
// Read and write system calls are /proc/PID/io's syscr and syscw, which
// count read, readv, write and writev (Go's and OpenSSL's socket I/O) but
// not recv, send, recvmsg or sendmsg (HAProxy's, whose counts therefore
// read 0), nor epoll_wait, accept or connect. splice moves bytes without
// them, so the plain relay's counts do not describe its copying either.
// Context switches are summed over the processes' threads.

// procCounters is a snapshot of what /proc says about a set of processes.
type procCounters struct {
	user, sys    float64 // CPU seconds
	syscr, syscw float64 // read and write system calls
	rchar, wchar float64 // bytes through them
	csw          float64 // context switches, voluntary and not
}

func readCounters(pids []int) procCounters {
	var c procCounters
	for _, pid := range pids {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			s := string(b)
			f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
			if len(f) > 12 {
				u, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				c.user += u / 100
				c.sys += st / 100
			}
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				k, v, ok := strings.Cut(line, ": ")
				if !ok {
					continue
				}
				n, _ := strconv.ParseFloat(v, 64)
				switch k {
				case "syscr":
					c.syscr += n
				case "syscw":
					c.syscw += n
				case "rchar":
					c.rchar += n
				case "wchar":
					c.wchar += n
				}
			}
		}
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
					n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
					c.csw += n
				}
			}
		}
	}
	return c
}

func (c procCounters) sub(d procCounters) procCounters {
	return procCounters{c.user - d.user, c.sys - d.sys, c.syscr - d.syscr, c.syscw - d.syscw, c.rchar - d.rchar, c.wchar - d.wchar, c.csw - d.csw}
}

// goStats is a Go process's runtime view of its memory, from a
// Prometheus text endpoint (medgate's admin /metrics, the relay's -stats).
type goStats struct{ heapInuse, stackInuse, goroutines float64 }

func readGoStats(urls []string) (goStats, bool) {
	var g goStats
	if len(urls) == 0 {
		return g, false
	}
	client := http.Client{Timeout: 5 * time.Second}
	for _, u := range urls {
		resp, err := client.Get(u)
		if err != nil {
			return g, false
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			name, v, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				continue
			}
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue
			}
			switch name {
			case "go_memstats_heap_inuse_bytes":
				g.heapInuse += n
			case "go_memstats_stack_inuse_bytes":
				g.stackInuse += n
			case "go_goroutines":
				g.goroutines += n
			}
		}
		resp.Body.Close()
	}
	return g, true
}

// serveGoStats answers GET / on addr with the figures readGoStats reads,
// for the relay baseline.
func serveGoStats(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		fmt.Fprintf(w, "go_memstats_heap_inuse_bytes %d\ngo_memstats_stack_inuse_bytes %d\ngo_goroutines %d\n", m.HeapInuse, m.StackInuse, runtime.NumGoroutine())
	}))
	return nil
}

// anonKiB sums the processes' anonymous resident memory (smaps_rollup),
// which leaves out the shared pages of their binaries and libraries.
func anonKiB(pids []int) float64 {
	var total float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Anonymous:"); ok {
				k, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				total += k
			}
		}
	}
	return total
}

// boundsRow is one configuration's costs in one workload, per unit.
type boundsRow struct {
	Config string             `json:"config"`
	Values map[string]float64 `json:"values"` // medians over rounds
}

// boundsTable is one workload: its unit and the columns it reports.
type boundsTable struct {
	Workload string      `json:"workload"`
	Per      string      `json:"per"`
	Columns  []string    `json:"columns"`
	Rows     []boundsRow `json:"rows"`
}

// perUnit turns a counter delta over units of work into the columns of the
// traffic workloads.
func perUnit(d procCounters, units, cpuScale float64) map[string]float64 {
	v := map[string]float64{
		"user":         d.user / units * cpuScale,
		"sys":          d.sys / units * cpuScale,
		"reads":        d.syscr / units,
		"writes":       d.syscw / units,
		"ctx switches": d.csw / units,
		"bytes/read":   0,
		"bytes/write":  0,
		"user+sys":     (d.user + d.sys) / units * cpuScale,
		"syscalls r+w": (d.syscr + d.syscw) / units,
	}
	if d.syscr > 0 {
		v["bytes/read"] = d.rchar / d.syscr
	}
	if d.syscw > 0 {
		v["bytes/write"] = d.wchar / d.syscw
	}
	return v
}

func medianRow(config string, samples []map[string]float64) boundsRow {
	row := boundsRow{Config: config, Values: map[string]float64{}}
	if len(samples) == 0 {
		return row
	}
	for k := range samples[0] {
		var s []float64
		for _, m := range samples {
			s = append(s, m[k])
		}
		row.Values[k] = summarize("", "", s).Median
	}
	return row
}

func measureBounds(ctx context.Context, o options, stdout io.Writer) error {
	work, sink, pki, done, err := setup("medgate-bounds")
	if err != nil {
		return err
	}
	defer done()
	o.stats = true
	configs, notes, err := startConfigs(ctx, o, sink, pki, work, stdout)
	for _, c := range configs {
		defer c.stop()
	}
	if err != nil {
		return err
	}
	trafficCols := []string{"user", "sys", "user+sys", "reads", "writes", "bytes/read", "bytes/write", "ctx switches"}
	bulkT := boundsTable{Workload: "bulk", Per: "GiB (CPU in s)", Columns: append([]string{"MB/s"}, trafficCols...)}
	rrT := boundsTable{Workload: "100-byte round trips", Per: "round trip (CPU in µs)", Columns: append([]string{"p50 µs", "p99 µs"}, trafficCols...)}
	connT := boundsTable{Workload: "new connections, one at a time", Per: "connection (CPU in ms)", Columns: append([]string{"conns/s"}, "user", "sys", "user+sys", "syscalls r+w", "ctx switches")}
	bulkS, rrS, connS := map[string][]map[string]float64{}, map[string][]map[string]float64{}, map[string][]map[string]float64{}
	for round := 1; round <= o.rounds; round++ {
		for _, c := range configs {
			if len(c.pids) == 0 {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			before := readCounters(c.pids)
			d, err := bulk(c.entry, o.bulk)
			if err != nil {
				return fmt.Errorf("%s bulk: %w", c.name, err)
			}
			v := perUnit(readCounters(c.pids).sub(before), float64(o.bulk)/(1<<30), 1)
			v["MB/s"] = float64(o.bulk) / d.Seconds() / 1e6
			bulkS[c.name] = append(bulkS[c.name], v)

			before = readCounters(c.pids)
			lat, err := roundTrips(c.entry, o.rr)
			if err != nil {
				return fmt.Errorf("%s round trips: %w", c.name, err)
			}
			v = perUnit(readCounters(c.pids).sub(before), float64(o.rr+min(o.rr, 50)), 1e6)
			v["p50 µs"], v["p99 µs"] = percentile(lat, 0.50), percentile(lat, 0.99)
			rrS[c.name] = append(rrS[c.name], v)

			before = readCounters(c.pids)
			rate, err := connRate(c.entry, o.conns)
			if err != nil {
				return fmt.Errorf("%s connection rate: %w", c.name, err)
			}
			time.Sleep(200 * time.Millisecond) // let the closes be counted too
			v = perUnit(readCounters(c.pids).sub(before), float64(o.conns), 1e3)
			v["conns/s"] = rate
			connS[c.name] = append(connS[c.name], v)
			fmt.Fprintf(stdout, "bounds round %d %-14s %6.0f MB/s  %5.2f+%5.2f CPU s/GiB  %7.0f+%7.0f syscalls/GiB  %5.2f CPU ms/conn\n",
				round, c.name, bulkS[c.name][round-1]["MB/s"], bulkS[c.name][round-1]["user"], bulkS[c.name][round-1]["sys"],
				bulkS[c.name][round-1]["reads"], bulkS[c.name][round-1]["writes"], connS[c.name][round-1]["user+sys"])
		}
	}
	for _, c := range configs {
		if len(c.pids) == 0 {
			continue
		}
		bulkT.Rows = append(bulkT.Rows, medianRow(c.name, bulkS[c.name]))
		rrT.Rows = append(rrT.Rows, medianRow(c.name, rrS[c.name]))
		connT.Rows = append(connT.Rows, medianRow(c.name, connS[c.name]))
	}

	idleT := boundsTable{Workload: "idle connections", Per: fmt.Sprintf("connection, %d held open", o.idle),
		Columns: []string{"RSS KiB", "anon KiB", "Go heap KiB", "Go stacks KiB", "goroutines"}}
	for _, c := range configs {
		if len(c.pids) == 0 || o.idle == 0 {
			continue
		}
		v, err := idleBounds(c, sink, o.idle)
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s idle: %v", c.name, err))
			continue
		}
		fmt.Fprintf(stdout, "bounds idle %-14s %6.1f KiB RSS per connection\n", c.name, v["RSS KiB"])
		idleT.Rows = append(idleT.Rows, boundsRow{Config: c.name, Values: v})
	}
	tables := []boundsTable{bulkT, rrT, connT, idleT}
	return writeBounds(o.out, tables, notes, o)
}

// idleBounds opens n idle connections through c, as idleMemory does, and
// returns what each one adds to the proxies.
func idleBounds(c *config, s *sink, n int) (map[string]float64, error) {
	defer s.release()
	rss0, anon0 := float64(rssKiB(c.pids)), anonKiB(c.pids)
	g0, haveGo := readGoStats(c.stats)
	conns, err := openIdle(c, s, n)
	defer func() {
		for _, cc := range conns {
			cc.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	time.Sleep(500 * time.Millisecond)
	v := map[string]float64{
		"RSS KiB":  (float64(rssKiB(c.pids)) - rss0) / float64(n),
		"anon KiB": (anonKiB(c.pids) - anon0) / float64(n),
	}
	if g1, ok := readGoStats(c.stats); ok && haveGo {
		v["Go heap KiB"] = (g1.heapInuse - g0.heapInuse) / 1024 / float64(n)
		v["Go stacks KiB"] = (g1.stackInuse - g0.stackInuse) / 1024 / float64(n)
		v["goroutines"] = (g1.goroutines - g0.goroutines) / float64(n)
	}
	return v, nil
}

func writeBounds(dir string, tables []boundsTable, notes []string, o options) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	host, _ := os.Hostname()
	doc := struct {
		Time   time.Time     `json:"time"`
		Host   string        `json:"host"`
		Rounds int           `json:"rounds"`
		Tables []boundsTable `json:"tables"`
		Notes  []string      `json:"notes,omitempty"`
	}{time.Now().UTC(), host, o.rounds, tables, notes}
	js, _ := json.MarshalIndent(doc, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "bounds.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# where the figures come from\n\n%s on %s; medians of %d rounds of %d MiB bulk, %d round trips, %d new connections; %d idle connections. Costs are the proxy processes' (both of a pair), from /proc.\n",
		doc.Time.Format("2006-01-02 15:04 UTC"), host, o.rounds, o.bulk>>20, o.rr, o.conns, o.idle)
	for _, t := range tables {
		if len(t.Rows) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n## %s, per %s\n\n| configuration | %s |\n|---|%s\n", t.Workload, t.Per, strings.Join(t.Columns, " | "), strings.Repeat("---:|", len(t.Columns)))
		for _, r := range t.Rows {
			fmt.Fprintf(&b, "| %s |", r.Config)
			for _, col := range t.Columns {
				v, ok := r.Values[col]
				switch {
				case !ok:
					b.WriteString(" |")
				case v != 0 && v < 10 && v > -10:
					fmt.Fprintf(&b, " %.2f |", v)
				default:
					fmt.Fprintf(&b, " %.0f |", v)
				}
			}
			b.WriteString("\n")
		}
	}
	notes = append(notes, "reads and writes are /proc/PID/io's syscr and syscw: read, readv, write and writev; HAProxy's recv and send are not counted, so its read 0",
		"Go heap is heap in use, collected or not, and Go stacks the goroutine stacks, from the Go proxies' runtime (medgate's admin /metrics, the relay's -stats)")
	for _, n := range notes {
		fmt.Fprintf(&b, "\n- %s", n)
	}
	b.WriteString("\n")
	return os.WriteFile(filepath.Join(dir, "bounds.md"), []byte(b.String()), 0o644)
}
