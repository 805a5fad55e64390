package main

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/medgate/medgate/identity"
)

// pairEnv starts an app, an inbound sidecar for hospital.example/pacs that
// admits hospital.example/lab/*, and returns them with the CA.
func startInbound(t *testing.T, ca *testCA, app *hashApp, extra map[string]string) *sidecar {
	t.Helper()
	env := identityEnv(ca.issue("spiffe://hospital.example/pacs", time.Hour), ca.bundle())
	env["MEDGATE_INBOUND_LISTEN"] = "127.0.0.1:0"
	env["MEDGATE_INBOUND_UPSTREAM"] = app.addr
	env["MEDGATE_INBOUND_ALLOW"] = "spiffe://hospital.example/lab/*"
	for k, v := range extra {
		env[k] = v
	}
	return startSidecar(t, env)
}

func startOutbound(t *testing.T, svidDir string, bundles []string, in *sidecar) *sidecar {
	t.Helper()
	env := identityEnv(svidDir, bundles...)
	env["MEDGATE_OUTBOUND_LISTEN"] = "127.0.0.1:0"
	env["MEDGATE_OUTBOUND_PEER"] = in.in
	env["MEDGATE_OUTBOUND_PEER_ID"] = "spiffe://hospital.example/pacs"
	return startSidecar(t, env)
}

func TestE2EAllowedTransferAndRefusals(t *testing.T) {
	ca := newTestCA(t, "hospital.example")
	other := newTestCA(t, "other.example")
	app := startHashApp(t, false)
	in := startInbound(t, ca, app, nil)

	// An allowed identity moves 100 MB intact, with a canary inside.
	lab := startOutbound(t, ca.issue("spiffe://hospital.example/lab/ws1", time.Hour), []string{ca.bundle()}, in)
	const size = 100 << 20
	payload := io.MultiReader(strings.NewReader("PID|||4711||"+canary+"\r"), patterned(1, size))
	want := hashOf(io.MultiReader(strings.NewReader("PID|||4711||"+canary+"\r"), patterned(1, size)))
	got, err := send(lab.out, payload)
	if err != nil {
		t.Fatalf("allowed transfer: %v", err)
	}
	if got != want {
		t.Fatalf("SHA-256 at the app %s, sent %s", got, want)
	}
	if app.conns.Load() != 1 {
		t.Fatalf("app saw %d connections, want 1", app.conns.Load())
	}

	// Refused in the tunnel's admission: valid SVIDs that policy does not allow.
	billing := startOutbound(t, ca.issue("spiffe://hospital.example/billing", time.Hour), []string{ca.bundle()}, in)
	foreign := startOutbound(t, other.issue("spiffe://other.example/lab/ws1", time.Hour), []string{other.bundle(), "hospital.example=" + ca.bundle()}, in)
	for _, sc := range []*sidecar{billing, foreign} {
		if _, err := send(sc.out, strings.NewReader("must not arrive")); err == nil {
			t.Errorf("%s: transfer succeeded, want refusal", sc.out)
		}
	}

	// Refused in the TLS handshake: raw clients.
	cert := func(svidDir string) []tls.Certificate {
		c, err := tls.LoadX509KeyPair(svidDir+"/svid.pem", svidDir+"/svid.key")
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{c}
	}
	expiredCA := *ca.ca
	expiredCA.Now = func() time.Time { return time.Now().Add(-3 * time.Hour) }
	expired := (&testCA{t, &expiredCA, t.TempDir()}).issue("spiffe://hospital.example/lab/ws1", time.Hour)
	raw := []struct {
		name string
		dial func() error
	}{
		{"expired", func() error {
			return tlsDial(in.in, &tls.Config{Certificates: cert(expired), InsecureSkipVerify: true, NextProtos: []string{identity.ALPN}})
		}},
		{"no client cert", func() error {
			return tlsDial(in.in, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{identity.ALPN}})
		}},
		{"tls 1.2", func() error {
			return tlsDial(in.in, &tls.Config{Certificates: cert(ca.issue("spiffe://hospital.example/lab/ws1", time.Hour)), InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
		}},
		{"plain tcp", func() error {
			c, err := net.Dial("tcp", in.in)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: pacs\r\n\r\n"+canary)
			b, _ := io.ReadAll(c)
			if len(b) > 0 && strings.Contains(string(b), "200") {
				return nil
			}
			return io.EOF
		}},
	}
	for _, r := range raw {
		if err := r.dial(); err == nil {
			t.Errorf("%s: connection accepted", r.name)
		}
	}

	wantReasons := map[string]string{
		"spiffe://hospital.example/billing": "id_not_allowed",
		"spiffe://other.example/lab/ws1":    "unknown_trust_domain",
	}
	for id, reason := range wantReasons {
		evs := in.eventsWith(func(e map[string]any) bool { return e["peer_id"] == id && e["verdict"] == "deny" })
		if len(evs) == 0 || !hasReason(evs[0], reason) {
			t.Errorf("%s: events %v, want a deny with reason %s", id, evs, reason)
		}
	}
	for _, reason := range []string{"expired", "no_client_cert", "tls_version", "not_tls"} {
		if evs := in.eventsWith(func(e map[string]any) bool { return e["verdict"] == "deny" && hasReason(e, reason) }); len(evs) == 0 {
			t.Errorf("no deny event with reason %s", reason)
		}
	}
	if app.conns.Load() != 1 {
		t.Errorf("app saw %d connections; refused peers must never reach it", app.conns.Load())
	}

	// Metrics count the refusals by reason.
	code, metrics := in.get("/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`medgate_tls_handshakes_total{result="no_client_cert",side="accept"}`,
		`medgate_tls_handshakes_total{result="unknown_trust_domain",side="accept"}`,
		`medgate_admissions_total{reason="id_not_allowed",route="default",verdict="deny"}`,
		`medgate_connections_total{direction="inbound",outcome="ok",route="default"} 1`,
		`medgate_bytes_total{flow="peer_to_app",route="default"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code, body := in.get("/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}

	// The canary never shows up in logs, events or metrics of any sidecar.
	for _, sc := range []*sidecar{in, lab, billing, foreign} {
		ev, _ := os.ReadFile(sc.events)
		for what, text := range map[string]string{"logs": sc.logs.String(), "events": string(ev), "metrics": metrics} {
			if strings.Contains(text, "Zebulon") {
				t.Errorf("canary found in %s", what)
			}
		}
	}
}

func hasReason(e map[string]any, reason string) bool {
	rs, _ := e["reasons"].([]any)
	for _, r := range rs {
		if r == reason {
			return true
		}
	}
	return false
}

func tlsDial(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// In TLS 1.3 the server judges the client certificate after the
	// client's handshake returns; a refusal shows on the first read.
	_, err = c.Read(make([]byte, 1))
	return err
}

func TestE2ESIGTERMDrainsInFlightTransfer(t *testing.T) {
	ca := newTestCA(t, "hospital.example")
	app := startHashApp(t, false)
	in := startInbound(t, ca, app, map[string]string{"MEDGATE_DRAIN_TIMEOUT": "30s"})
	lab := startOutbound(t, ca.issue("spiffe://hospital.example/lab/ws1", time.Hour), []string{ca.bundle()}, in)

	c, err := net.Dial("tcp", lab.out)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	first := patterned(2, 8<<20)
	if _, err := io.Copy(c, first); err != nil {
		t.Fatal(err)
	}
	// Both sidecars are told to stop while the transfer is half done.
	stopped := make(chan error, 2)
	go func() { stopped <- in.stop() }()
	go func() { stopped <- lab.stop() }()
	time.Sleep(300 * time.Millisecond)
	if _, err := net.DialTimeout("tcp", lab.out, time.Second); err == nil {
		t.Error("a draining sidecar still accepts new connections")
	}
	if _, err := io.Copy(c, patterned(3, 8<<20)); err != nil {
		t.Fatalf("in-flight transfer cut by SIGTERM: %v", err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	want := hashOf(io.MultiReader(patterned(2, 8<<20), patterned(3, 8<<20)))
	if strings.TrimSpace(string(got)) != want {
		t.Fatalf("after drain the app answered %q, want %s", got, want)
	}
	for range 2 {
		if err := <-stopped; err != nil {
			t.Errorf("sidecar exit after SIGTERM: %v", err)
		}
	}
}

func TestE2EConfigErrorsNameEveryVariable(t *testing.T) {
	out, err := runBinary(map[string]string{
		"MEDGATE_SVID_CERT":        "/nonexistent/svid.pem",
		"MEDGATE_INBOUND_LISTEN":   "nonsense",
		"MEDGATE_INBOUND_ALLOW":    "spiffe://x.example/*/bad",
		"MEDGATE_OUTBOUND_PEER_ID": "not-an-id",
		"MEDGATE_IDLE_TIMEOUT":     "soon",
		"MEDGATE_MAX_SESSIONS":     "0",
		"MEDGATE_LOG_FORMAT":       "xml",
	}, "sidecar")
	if err == nil {
		t.Fatal("sidecar started with bad settings")
	}
	for _, v := range []string{"MEDGATE_SVID_CERT", "MEDGATE_SVID_KEY", "MEDGATE_TRUST_BUNDLE", "MEDGATE_INBOUND_LISTEN", "MEDGATE_INBOUND_UPSTREAM",
		"MEDGATE_INBOUND_ALLOW", "MEDGATE_OUTBOUND_PEER_ID", "MEDGATE_OUTBOUND_LISTEN", "MEDGATE_OUTBOUND_PEER", "MEDGATE_IDLE_TIMEOUT",
		"MEDGATE_MAX_SESSIONS", "MEDGATE_LOG_FORMAT"} {
		if !strings.Contains(out, v+":") {
			t.Errorf("error output does not name %s:\n%s", v, out)
		}
	}
}

func runBinary(env map[string]string, args ...string) (string, error) {
	cmd := exec.Command(medgateBin, args...)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestE2EFloodDoesNotStarveAllowedClient fills the inbound sidecar's
// pending-handshake slots with idle and half-open connections; an allowed
// client still gets through.
func TestE2EFloodDoesNotStarveAllowedClient(t *testing.T) {
	ca := newTestCA(t, "hospital.example")
	app := startHashApp(t, false)
	in := startInbound(t, ca, app, map[string]string{"MEDGATE_MAX_PENDING_HANDSHAKES": "32", "MEDGATE_HANDSHAKE_TIMEOUT": "1m"})
	lab := startOutbound(t, ca.issue("spiffe://hospital.example/lab/ws1", time.Hour), []string{ca.bundle()}, in)
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for i := range 300 {
		c, err := net.Dial("tcp", in.in)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			c.Write([]byte{0x16, 0x03, 0x01, 0x02}) // half a ClientHello, then silence
		}
		flood = append(flood, c)
	}
	time.Sleep(500 * time.Millisecond) // older than the eviction floor
	got, err := send(lab.out, strings.NewReader("through the flood"))
	if err != nil {
		t.Fatalf("allowed client starved: %v", err)
	}
	if want := hashOf(strings.NewReader("through the flood")); got != want {
		t.Fatalf("app answered %s, want %s", got, want)
	}
	_, metrics := in.get("/metrics")
	if !strings.Contains(metrics, `medgate_capacity_refusals_total{kind="pending_handshakes"}`) {
		t.Error("evictions not counted in medgate_capacity_refusals_total")
	}
}
