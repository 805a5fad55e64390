package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The lossy link: two network namespaces joined by a pair of TUN devices
// and a forwarder in this process that delays, drops and rate-limits
// packets the same way whatever they carry, so TCP and QUIC cross the same
// link. Linux only, as root; the addresses exist only inside the
// namespaces this run creates.
const (
	nsClient   = "medgate-bench-a"
	nsServer   = "medgate-bench-b"
	addrClient = "10.77.0.1"
	addrServer = "10.77.0.2"
)

type link struct {
	delay time.Duration // one way
	loss  float64       // per packet, each way
	rate  float64       // bytes per second, each way
}

func run_(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// openTUN creates a TUN device without packet information headers.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// setupLink creates the namespaces and devices and starts forwarding; the
// returned func tears everything down.
func setupLink(l link) (func(), error) {
	teardown := func() {
		exec.Command("ip", "netns", "del", nsClient).Run()
		exec.Command("ip", "netns", "del", nsServer).Run()
	}
	teardown()
	tunA, err := openTUN("mgbench0")
	if err != nil {
		return nil, err
	}
	tunB, err := openTUN("mgbench1")
	if err != nil {
		tunA.Close()
		return nil, err
	}
	steps := [][]string{
		{"ip", "netns", "add", nsClient},
		{"ip", "netns", "add", nsServer},
		{"ip", "link", "set", "mgbench0", "netns", nsClient},
		{"ip", "link", "set", "mgbench1", "netns", nsServer},
		{"ip", "-n", nsClient, "link", "set", "lo", "up"},
		{"ip", "-n", nsServer, "link", "set", "lo", "up"},
		{"ip", "-n", nsClient, "addr", "add", addrClient, "peer", addrServer, "dev", "mgbench0"},
		{"ip", "-n", nsServer, "addr", "add", addrServer, "peer", addrClient, "dev", "mgbench1"},
		{"ip", "-n", nsClient, "link", "set", "mgbench0", "mtu", "1500", "up"},
		{"ip", "-n", nsServer, "link", "set", "mgbench1", "mtu", "1500", "up"},
	}
	for _, s := range steps {
		if err := run_(s[0], s[1:]...); err != nil {
			tunA.Close()
			tunB.Close()
			teardown()
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); forward(ctx, tunA, tunB, l) }()
	go func() { defer wg.Done(); forward(ctx, tunB, tunA, l) }()
	return func() {
		cancel()
		tunA.Close()
		tunB.Close()
		wg.Wait()
		teardown()
	}, nil
}

type packet struct {
	at   time.Time
	data []byte
}

// forward carries packets from src to dst through the emulated link: a
// token-bucket serializer at l.rate, a tail-drop queue, random loss, and a
// fixed delay.
func forward(ctx context.Context, src, dst *os.File, l link) {
	queue := make(chan packet, 4096)
	go func() {
		for p := range queue {
			if d := time.Until(p.at); d > 0 {
				time.Sleep(d)
			}
			dst.Write(p.data)
		}
	}()
	defer close(queue)
	var free time.Time // when the link is next free to send
	buf := make([]byte, 65536)
	for ctx.Err() == nil {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if rand.Float64() < l.loss {
			continue
		}
		now := time.Now()
		start := now
		if free.After(start) {
			start = free
		}
		free = start.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
		if free.Sub(now) > 500*time.Millisecond { // queue full: tail drop
			free = start
			continue
		}
		select {
		case queue <- packet{at: free.Add(l.delay), data: append([]byte(nil), buf[:n]...)}:
		default:
		}
	}
}

// inNetns re-executes this program inside a network namespace.
func inNetns(ctx context.Context, ns, logPath string, args ...string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return startProc(ctx, logPath, "ip", nil, append([]string{"netns", "exec", ns, self}, args...)...)
}

// runSinkMode serves the sink on addr (re-executed inside a namespace).
func runSinkMode(args []string) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	addr := fs.String("listen", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := startSinkOn(*addr)
	if err != nil {
		return err
	}
	defer s.Close()
	select {}
}

// runLoadMode sends n objects of size bytes through entry, in parallel or
// one after another, and prints the seconds it took (re-executed inside a
// namespace).
func runLoadMode(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	entry := fs.String("entry", "", "")
	n := fs.Int("n", 50, "")
	size := fs.Int64("size", 1<<20, "")
	sequential := fs.Bool("sequential", false, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for waitReady(*entry) != nil {
		if time.Now().After(deadline) {
			return errors.New("entry not ready")
		}
	}
	start := time.Now()
	if *sequential {
		for range *n {
			if _, err := bulk(*entry, *size); err != nil {
				return err
			}
		}
		fmt.Printf("%.3f\n", time.Since(start).Seconds())
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, *n)
	for range *n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := bulk(*entry, *size); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	fmt.Printf("%.3f\n", time.Since(start).Seconds())
	return nil
}

// lossyRound runs one timed round of n objects of size bytes, in parallel
// or one after another, over the emulated link with the given transport,
// and returns seconds.
func lossyRound(ctx context.Context, o options, pki *benchPKI, work, transport string, n int, size int64, sequential bool) (float64, error) {
	sinkAddr := addrServer + ":9100"
	in := addrServer + ":8443"
	sink, err := inNetns(ctx, nsServer, filepath.Join(work, "lossy-sink.log"), "sink", "-listen", sinkAddr)
	if err != nil {
		return 0, err
	}
	defer stopAll(sink)()
	self, _ := filepath.Abs(o.bin)
	common := []string{"MEDGATE_ADMIN_ADDR=off", "MEDGATE_LOG_LEVEL=warn", "MEDGATE_INNER_LAYER=off", "MEDGATE_TRUST_BUNDLE=" + pki.bundle}
	svid := func(dir string) []string {
		return []string{"MEDGATE_SVID_CERT=" + filepath.Join(dir, "svid.pem"), "MEDGATE_SVID_KEY=" + filepath.Join(dir, "svid.key")}
	}
	inEnv := append(append(append([]string{}, common...), svid(pki.server)...),
		"MEDGATE_INBOUND_LISTEN="+in, "MEDGATE_INBOUND_UPSTREAM="+sinkAddr, "MEDGATE_INBOUND_ALLOW=spiffe://bench.example/client")
	outEnv := append(append(append([]string{}, common...), svid(pki.client)...),
		"MEDGATE_OUTBOUND_LISTEN=127.0.0.1:9200", "MEDGATE_OUTBOUND_PEER="+in, "MEDGATE_OUTBOUND_PEER_ID=spiffe://bench.example/server",
		"MEDGATE_OUTBOUND_TRANSPORT="+transport)
	envArgs := func(env []string) []string { return append([]string{"env"}, env...) }
	inbound, err := startProc(ctx, filepath.Join(work, "lossy-in.log"), "ip", nil, append(append([]string{"netns", "exec", nsServer}, envArgs(inEnv)...), self, "sidecar")...)
	if err != nil {
		return 0, err
	}
	defer stopAll(inbound)()
	outbound, err := startProc(ctx, filepath.Join(work, "lossy-out.log"), "ip", nil, append(append([]string{"netns", "exec", nsClient}, envArgs(outEnv)...), self, "sidecar")...)
	if err != nil {
		return 0, err
	}
	defer stopAll(outbound)()
	selfBench, _ := os.Executable()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", nsClient, selfBench, "load", "-entry", "127.0.0.1:9200",
		"-n", fmt.Sprint(n), "-size", fmt.Sprint(size), fmt.Sprintf("-sequential=%t", sequential)).CombinedOutput()
	if err != nil {
		logs, _ := os.ReadFile(filepath.Join(work, "lossy-out.log"))
		return 0, fmt.Errorf("load over %s: %v: %s\n%s", transport, err, out, logs)
	}
	var secs float64
	if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "%f", &secs); err != nil {
		return 0, fmt.Errorf("load output %q", out)
	}
	return secs, nil
}
