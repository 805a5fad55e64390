package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medgate/medgate/posture"
)

func TestConfigValid(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"svid.pem", "svid.key", "eu.pem", "cn.pem"} {
		os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600)
	}
	routes := filepath.Join(dir, "routes.yaml")
	os.WriteFile(routes, []byte(`
inbound:
  - {name: ris, listen: "127.0.0.1:9000", upstream: "127.0.0.1:2575", allow: ["spiffe://lab.example/*"]}
outbound:
  - {name: to-eu, listen: "127.0.0.1:11112", peer: "eu:8443", peerID: "spiffe://eu.example/pacs", remoteRoute: pacs}
`), 0o600)
	cfg, err := loadSidecarConfig(map[string]string{
		"MEDGATE_SVID_CERT":        filepath.Join(dir, "svid.pem"),
		"MEDGATE_SVID_KEY":         filepath.Join(dir, "svid.key"),
		"MEDGATE_TRUST_BUNDLE":     filepath.Join(dir, "eu.pem") + ",cn.example=" + filepath.Join(dir, "cn.pem"),
		"MEDGATE_INBOUND_LISTEN":   "0.0.0.0:8443",
		"MEDGATE_INBOUND_UPSTREAM": "127.0.0.1:4242",
		"MEDGATE_INBOUND_ALLOW":    "spiffe://lab.example/*,spiffe://eu.example/ris",
		"MEDGATE_IDLE_TIMEOUT":     "2m",
		"MEDGATE_CONFIG":           routes,
		"MEDGATE_KEYRING":          filepath.Join(dir, "keyring.json"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range cfg.proxy.Inbound {
		names = append(names, "in:"+r.Name)
	}
	for _, r := range cfg.proxy.Outbound {
		names = append(names, "out:"+r.Name+">"+r.RemoteRoute)
	}
	if diff := cmp.Diff([]string{"in:default", "in:ris", "out:to-eu>pacs"}, names); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	if cfg.proxy.IdleTimeout != 2*time.Minute || cfg.proxy.HandshakeTimeout != 5*time.Second {
		t.Errorf("timeouts = %v, %v", cfg.proxy.IdleTimeout, cfg.proxy.HandshakeTimeout)
	}
}

func TestConfigWorkloadAPIFallback(t *testing.T) {
	cfg, err := loadSidecarConfig(map[string]string{
		"SPIFFE_ENDPOINT_SOCKET":   "unix:///run/spire/agent.sock",
		"MEDGATE_OUTBOUND_LISTEN":  "127.0.0.1:1",
		"MEDGATE_OUTBOUND_PEER":    "peer:8443",
		"MEDGATE_OUTBOUND_PEER_ID": "spiffe://eu.example/pacs",
		"MEDGATE_INNER_LAYER":      "off",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.workloadAPI != "unix:///run/spire/agent.sock" {
		t.Errorf("workload API = %q", cfg.workloadAPI)
	}
	_, err = loadSidecarConfig(map[string]string{"MEDGATE_WORKLOAD_API_ADDR": "unix://relative.sock", "MEDGATE_OUTBOUND_LISTEN": "127.0.0.1:1", "MEDGATE_OUTBOUND_PEER": "p:1", "MEDGATE_OUTBOUND_PEER_ID": "spiffe://a/b"})
	if err == nil || !strings.Contains(err.Error(), "MEDGATE_WORKLOAD_API_ADDR") {
		t.Errorf("relative unix address: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"nothing", map[string]string{}, []string{"MEDGATE_SVID_CERT", "no routes"}},
		{"both identities", map[string]string{"MEDGATE_WORKLOAD_API_ADDR": "unix:///a", "MEDGATE_SVID_CERT": "/x"}, []string{"MEDGATE_WORKLOAD_API_ADDR: set together"}},
		{"bad durations and numbers", map[string]string{"MEDGATE_HANDSHAKE_TIMEOUT": "-1s", "MEDGATE_DRAIN_TIMEOUT": "x", "MEDGATE_MAX_PENDING_HANDSHAKES": "many"},
			[]string{"MEDGATE_HANDSHAKE_TIMEOUT: must be positive", "MEDGATE_DRAIN_TIMEOUT:", "MEDGATE_MAX_PENDING_HANDSHAKES:"}},
		{"bad patterns", map[string]string{"MEDGATE_INBOUND_LISTEN": ":1", "MEDGATE_INBOUND_UPSTREAM": "a:2", "MEDGATE_INBOUND_ALLOW": "spiffe://a/*/b,spiffe://b"},
			[]string{"MEDGATE_INBOUND_ALLOW:", `"spiffe://a/*/b"`, `"spiffe://b"`}},
		{"admin", map[string]string{"MEDGATE_ADMIN_ADDR": "9901"}, []string{"MEDGATE_ADMIN_ADDR:"}},
		{"inner layer without keyring", map[string]string{"MEDGATE_OUTBOUND_LISTEN": "127.0.0.1:1", "MEDGATE_OUTBOUND_PEER": "p:1", "MEDGATE_OUTBOUND_PEER_ID": "spiffe://a/b"},
			[]string{"MEDGATE_KEYRING: required"}},
		{"inner layer value", map[string]string{"MEDGATE_INNER_LAYER": "maybe"}, []string{"MEDGATE_INNER_LAYER:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadSidecarConfig(tt.env)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestRoutesFileErrorsNameFieldAndLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "routes.yaml")
	os.WriteFile(p, []byte("inbound:\n  - name: a\n    listen: nope\n    upstream: 127.0.0.1:1\n    allow: [spiffe://x.example/*]\n    colour: blue\n"), 0o600)
	_, _, _, err := loadRoutesFile(p, false)
	if err == nil || !strings.Contains(err.Error(), "line 6") || !strings.Contains(err.Error(), "colour") {
		t.Errorf("unknown field: %v", err)
	}
	os.WriteFile(p, []byte("inbound:\n  - name: a\n    listen: nope\n    upstream: 127.0.0.1:1\n    allow: [spiffe://x.example/*]\n"), 0o600)
	_, _, _, err = loadRoutesFile(p, false)
	if err == nil || !strings.Contains(err.Error(), "inbound[0].listen") {
		t.Errorf("bad listen: %v", err)
	}
}

// TestREADMEDocumentsEverySetting keeps the README's settings table in step
// with what the sidecar parses.
func TestREADMEDocumentsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range envFields(reflect.TypeOf(sidecarEnv{})) {
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		if !strings.Contains(string(readme), "`"+envPrefix+name+"`") {
			t.Errorf("README does not document %s%s", envPrefix, name)
		}
	}
}

// TestExamplePoliciesLoadInTheSidecar loads the shipped rule sets the way
// the sidecar does, masking profiles included.
func TestExamplePoliciesLoadInTheSidecar(t *testing.T) {
	files, _ := filepath.Glob("../../examples/policies/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example policies")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			p, err := posture.LoadFiles(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkPolicyProfiles(p); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func FuzzParseRoutes(f *testing.F) {
	f.Add([]byte("inbound:\n  - {name: pacs, listen: \"0.0.0.0:8443\", upstream: \"127.0.0.1:4242\", allow: [\"spiffe://lab.example/*\"], protocol: dicom}\noutbound:\n  - {name: to-eu, listen: \"127.0.0.1:11112\", peer: \"eu:8443\", peerID: \"spiffe://eu.example/pacs\", transport: auto}\n"))
	f.Add([]byte("inbound: [{name: a, colour: blue}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, out, _, err := parseRoutes("routes.yaml", data, false)
		if err != nil {
			return
		}
		for _, r := range in {
			if r.Name == "" || len(r.Allow) == 0 {
				t.Fatalf("accepted an inbound route without a name or allow list: %+v", r)
			}
		}
		for _, r := range out {
			if r.Name == "" || r.PeerID.IsZero() {
				t.Fatalf("accepted an outbound route without a name or peer ID: %+v", r)
			}
		}
	})
}
