package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/medgate/medgate/identity/devca"
)

// medgateBin is the binary under test, built once by TestMain with
// buildFlags.
var (
	medgateBin string
	buildFlags []string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "medgate-bin")
	if err != nil {
		panic(err)
	}
	medgateBin = filepath.Join(dir, "medgate")
	out, err := exec.Command("go", append(append([]string{"build"}, buildFlags...), "-o", medgateBin, ".")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build medgate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// canary is a patient name sent through the tunnels; it must never appear
// in any log, metric or event.
const canary = "CANARY^Zebulon Quixote-Marchetti"

// testCA is a dev CA with a directory of issued SVIDs.
type testCA struct {
	t   *testing.T
	ca  *devca.CA
	dir string
}

func newTestCA(t *testing.T, td string) *testCA {
	t.Helper()
	dir := t.TempDir()
	ca, err := devca.Init(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString(td))
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{t, ca, dir}
}

// issue writes an SVID for id and returns its directory.
func (c *testCA) issue(id string, ttl time.Duration) string {
	c.t.Helper()
	svid := c.svid(id, ttl)
	out := filepath.Join(c.dir, strings.ReplaceAll(strings.TrimPrefix(id, "spiffe://"), "/", "_")+fmt.Sprint(time.Now().UnixNano()))
	if err := c.ca.WriteSVID(svid, out); err != nil {
		c.t.Fatal(err)
	}
	return out
}

func (c *testCA) svid(id string, ttl time.Duration) *x509svid.SVID {
	c.t.Helper()
	svid, err := c.ca.Issue(spiffeid.RequireFromString(id), ttl)
	if err != nil {
		c.t.Fatal(err)
	}
	return svid
}

// bundle writes the CA certificate to a file and returns its path.
func (c *testCA) bundle() string {
	p := filepath.Join(c.dir, "bundle-"+c.ca.TrustDomain.Name()+".pem")
	if err := os.WriteFile(p, c.ca.BundlePEM(), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// identityEnv is the identity part of a sidecar's environment.
func identityEnv(svidDir string, bundles ...string) map[string]string {
	return map[string]string{
		"MEDGATE_SVID_CERT":    filepath.Join(svidDir, devca.SVIDFile),
		"MEDGATE_SVID_KEY":     filepath.Join(svidDir, devca.KeyFile),
		"MEDGATE_TRUST_BUNDLE": strings.Join(bundles, ","),
	}
}

// sidecar is a running medgate sidecar process.
type sidecar struct {
	t      *testing.T
	cmd    *exec.Cmd
	logs   *syncBuffer
	events string
	admin  string
	in     string // bound inbound address
	out    string // bound outbound address
	exited chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// testKeyrings holds one keyring file per test: the data owner's keyring,
// which all of the test's sidecars share.
var testKeyrings sync.Map // *testing.T -> path

func testKeyring(t *testing.T) string {
	t.Helper()
	if p, ok := testKeyrings.Load(t); ok {
		return p.(string)
	}
	dir := filepath.Join(t.TempDir(), "keys")
	path := filepath.Join(dir, "keyring.json")
	if out, err := exec.Command(medgateBin, "keys", "init", "--keyring", path).CombinedOutput(); err != nil {
		t.Fatalf("keys init: %v\n%s", err, out)
	}
	testKeyrings.Store(t, path)
	t.Cleanup(func() { testKeyrings.Delete(t) })
	return path
}

// startSidecar runs the binary with env (plus admin, logs, events and the
// test's keyring as defaults) and waits until it has started.
func startSidecar(t *testing.T, env map[string]string) *sidecar {
	t.Helper()
	return startMedgate(t, "sidecar", env)
}

// startMedgate runs a long-lived subcommand (sidecar or control-plane)
// and waits until it says it has started.
func startMedgate(t *testing.T, sub string, env map[string]string) *sidecar {
	t.Helper()
	s := &sidecar{t: t, logs: &syncBuffer{}, events: filepath.Join(t.TempDir(), "events.jsonl"), exited: make(chan error, 1)}
	full := map[string]string{
		"MEDGATE_ADMIN_ADDR": "127.0.0.1:0",
		"MEDGATE_LOG_FORMAT": "json",
		"MEDGATE_LOG_LEVEL":  "debug",
		"MEDGATE_EVENT_LOG":  s.events,
		"MEDGATE_KEYRING":    testKeyring(t),
		"PATH":               os.Getenv("PATH"),
	}
	for k, v := range env {
		full[k] = v
	}
	s.cmd = exec.Command(medgateBin, sub)
	for k, v := range full {
		s.cmd.Env = append(s.cmd.Env, k+"="+v)
	}
	pr, pw := io.Pipe()
	s.cmd.Stderr = pw
	s.cmd.Stdout = s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			s.logs.Write([]byte(line + "\n"))
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			switch rec["msg"] {
			case "admin endpoint":
				s.admin, _ = rec["addr"].(string)
			case "inbound route":
				s.in, _ = rec["listen"].(string)
			case "outbound route":
				s.out, _ = rec["listen"].(string)
			case "control plane started":
				s.in, _ = rec["listen"].(string)
				once.Do(func() { close(started) })
			case "sidecar started":
				once.Do(func() { close(started) })
			}
		}
	}()
	go func() { s.exited <- s.cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.exited
		if t.Failed() {
			t.Logf("sidecar logs:\n%s", s.logs.String())
		}
	})
	select {
	case <-started:
	case err := <-s.exited:
		s.exited <- err
		t.Fatalf("%s exited at start: %v\n%s", sub, err, s.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not start\n%s", sub, s.logs.String())
	}
	return s
}

// stop sends SIGTERM and waits for the process to exit.
func (s *sidecar) stop() error {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.exited:
		s.exited <- err
		return err
	case <-time.After(60 * time.Second):
		s.t.Fatal("sidecar did not stop after SIGTERM")
		return nil
	}
}

// kill ends the process with SIGKILL, as a crash would.
func (s *sidecar) kill() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	err := <-s.exited
	s.exited <- err
}

// eventsWith waits for access events matching pred in the event log.
func (s *sidecar) eventsWith(pred func(map[string]any) bool) []map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var found []map[string]any
		data, _ := os.ReadFile(s.events)
		for _, line := range bytes.Split(data, []byte("\n")) {
			var ev map[string]any
			if json.Unmarshal(line, &ev) == nil && pred(ev) {
				found = append(found, ev)
			}
		}
		if len(found) > 0 || time.Now().After(deadline) {
			return found
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *sidecar) get(path string) (int, string) {
	s.t.Helper()
	resp, err := http.Get("http://" + s.admin + path)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// hashApp is the legacy app: it reads until the client half-closes and
// answers with the SHA-256 of what it read. It counts connections.
type hashApp struct {
	addr  string
	conns atomic.Int64
	seen  *syncBuffer // everything received, when record is set
}

func startHashApp(t *testing.T, record bool) *hashApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	a := &hashApp{addr: ln.Addr().String()}
	if record {
		a.seen = &syncBuffer{}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.conns.Add(1)
			go func() {
				defer c.Close()
				h := sha256.New()
				var w io.Writer = h
				if a.seen != nil {
					w = io.MultiWriter(h, a.seen)
				}
				if _, err := io.Copy(w, c); err != nil {
					return
				}
				fmt.Fprintf(c, "%x\n", h.Sum(nil))
			}()
		}
	}()
	return a
}

// send writes payload (from r) to addr, half-closes and returns the app's
// answer.
func send(addr string, r io.Reader) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(120 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, r)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), <-errc
}

// patterned returns a deterministic pseudo-random stream of n bytes.
func patterned(seed byte, n int64) io.Reader {
	return io.LimitReader(mrand.NewChaCha8([32]byte{seed}), n)
}

func hashOf(r io.Reader) string {
	h := sha256.New()
	io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil))
}

// io2 concatenates two readers.
func io2(a, b io.Reader) io.Reader { return io.MultiReader(a, b) }

// writeBorderPolicy writes a policy for hospital.example whose eu/, cn/
// and us/ paths sit in the EU, CN and US, with one masking profile, "out",
// on the built-in base, plus the given residency rules and access policy
// documents; it returns the file's path.
func writeBorderPolicy(t *testing.T, base, rules, access string) string {
	t.Helper()
	text := `apiVersion: medgate.io/v1
kind: Jurisdictions
metadata: {name: sites}
spec:
  codes: [EU, CN, US]
  bindings:
    - {id: "spiffe://hospital.example/eu/*", jurisdiction: EU}
    - {id: "spiffe://hospital.example/cn/*", jurisdiction: CN}
    - {id: "spiffe://hospital.example/us/*", jurisdiction: US}
---
apiVersion: medgate.io/v1
kind: MaskingProfile
metadata: {name: out}
spec: {reference: the built-in profile, base: ` + base + `}
---
apiVersion: medgate.io/v1
kind: ResidencyRules
metadata: {name: transfers}
spec:
  rules:
` + rules + "---\n" + access
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// outboundEnv is the environment of an outbound sidecar for id that
// carries the local app to peer, which must present peerID.
func outboundEnv(ca *testCA, id, peer, peerID string) map[string]string {
	env := identityEnv(ca.issue(id, time.Hour), ca.bundle())
	env["MEDGATE_OUTBOUND_LISTEN"] = "127.0.0.1:0"
	env["MEDGATE_OUTBOUND_PEER"] = peer
	env["MEDGATE_OUTBOUND_PEER_ID"] = peerID
	return env
}

// eventsAtLeast waits until n events match pred and returns them (or
// what matched by the deadline).
func (s *sidecar) eventsAtLeast(n int, pred func(map[string]any) bool) []map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs := s.eventsWith(pred)
		if len(evs) >= n || time.Now().After(deadline) {
			return evs
		}
		time.Sleep(20 * time.Millisecond)
	}
}
