package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/medgate/medgate/identity"
)

// TestE2ESPIRE runs both sidecars on SVIDs from a real SPIRE server and
// agent, and watches the agent rotate the inbound sidecar's SVID while a
// session stays live. It needs spire-server and spire-agent on PATH (make
// e2e-spire builds them); otherwise it is skipped.
func TestE2ESPIRE(t *testing.T) {
	serverBin, err1 := exec.LookPath("spire-server")
	agentBin, err2 := exec.LookPath("spire-agent")
	if err1 != nil || err2 != nil {
		t.Skip("spire-server and spire-agent are not on PATH; run 'make e2e-spire' to build SPIRE v1.13.3 and run this test")
	}
	dir, err := os.MkdirTemp("", "spire")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	port := freePort(t)
	serverSock := filepath.Join(dir, "server.sock")
	agentSock := filepath.Join(dir, "agent.sock")
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	serverConf := write("server.conf", fmt.Sprintf(`
server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = "%s"
  trust_domain = "hospital.example"
  data_dir = "%s/server-data"
  log_level = "INFO"
  default_x509_svid_ttl = "90s"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "%s/datastore.sqlite3"
    }
  }
  NodeAttestor "join_token" { plugin_data {} }
  KeyManager "memory" { plugin_data {} }
}
`, port, serverSock, dir, dir))
	agentConf := write("agent.conf", fmt.Sprintf(`
agent {
  data_dir = "%s/agent-data"
  log_level = "INFO"
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = "%s"
  trust_domain = "hospital.example"
  insecure_bootstrap = true
}
plugins {
  NodeAttestor "join_token" { plugin_data {} }
  KeyManager "memory" { plugin_data {} }
  WorkloadAttestor "unix" { plugin_data {} }
}
`, dir, port, agentSock))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	background := func(name string, args ...string) {
		cmd := exec.CommandContext(ctx, name, args...)
		logf, _ := os.Create(filepath.Join(dir, filepath.Base(name)+".log"))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() })
	}
	run := func(name string, args ...string) string {
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	background(serverBin, "run", "-config", serverConf)
	waitUntil(t, 60*time.Second, func() bool {
		return exec.Command(serverBin, "healthcheck", "-socketPath", serverSock).Run() == nil
	})
	tokenOut := run(serverBin, "token", "generate", "-socketPath", serverSock, "-spiffeID", "spiffe://hospital.example/agent")
	token := regexp.MustCompile(`Token: (\S+)`).FindStringSubmatch(tokenOut)
	if token == nil {
		t.Fatalf("no join token in %q", tokenOut)
	}
	run(serverBin, "entry", "create", "-socketPath", serverSock, "-parentID", "spiffe://hospital.example/agent",
		"-spiffeID", "spiffe://hospital.example/pacs", "-selector", fmt.Sprintf("unix:uid:%d", os.Getuid()))
	background(agentBin, "run", "-config", agentConf, "-joinToken", token[1])
	waitUntil(t, 60*time.Second, func() bool {
		return exec.Command(agentBin, "healthcheck", "-socketPath", agentSock).Run() == nil
	})

	addr := "unix://" + agentSock
	in := startSidecar(t, map[string]string{
		"MEDGATE_WORKLOAD_API_ADDR": addr,
		"MEDGATE_INBOUND_LISTEN":    "127.0.0.1:0",
		"MEDGATE_INBOUND_UPSTREAM":  startEchoApp(t),
		"MEDGATE_INBOUND_ALLOW":     "spiffe://hospital.example/pacs",
	})
	out := startSidecar(t, map[string]string{
		"MEDGATE_WORKLOAD_API_ADDR": addr,
		"MEDGATE_OUTBOUND_LISTEN":   "127.0.0.1:0",
		"MEDGATE_OUTBOUND_PEER":     in.in,
		"MEDGATE_OUTBOUND_PEER_ID":  "spiffe://hospital.example/pacs",
	})
	live, err := net.Dial("tcp", out.out)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	live.SetDeadline(time.Now().Add(4 * time.Minute))
	r := bufio.NewReader(live)
	roundTrip := func(msg string) {
		t.Helper()
		fmt.Fprintln(live, msg)
		if got, err := r.ReadString('\n'); err != nil || strings.TrimSpace(got) != msg {
			t.Fatalf("round trip %q: %q, %v", msg, got, err)
		}
	}
	roundTrip("through SPIRE SVIDs")

	src, err := identity.WorkloadAPISource(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	presented := func() string {
		c, err := tls.Dial("tcp", in.in, identity.ClientConfig(src, identity.AllowID(spiffeid.RequireFromString("spiffe://hospital.example/pacs")), nil))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := presented()
	// The agent renews at half the 90s TTL.
	waitUntil(t, 3*time.Minute, func() bool { roundTrip("tick"); return presented() != before })
	roundTrip("after rotation")
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(time.Second)
	}
}
