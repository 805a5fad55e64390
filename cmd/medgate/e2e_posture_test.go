package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// postureRig is a CA, a development posture issuer and an inbound sidecar
// run on a policy file.
type postureRig struct {
	t        *testing.T
	ca       *testCA
	issuer   string // issuer directory
	jwks     string
	policy   string // policy file path
	signals  string
	in       *sidecar
	svidDirs map[string]string
}

const ruleSet = `apiVersion: medgate.io/v1
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
metadata: {name: basic}
spec: {reference: 45 CFR 164.514(b)(2), base: hipaa-safe-harbor}
---
apiVersion: medgate.io/v1
kind: ResidencyRules
metadata: {name: transfers}
spec:
  rules:
    - {dataClass: records, from: EU, to: EU, action: allow}
    - {dataClass: records, from: EU, to: US, action: deidentify, maskingProfile: basic}
---
apiVersion: medgate.io/v1
kind: PostureProfile
metadata: {name: workstation}
spec:
  issuers:
    - name: medgate-dev-issuer
      jwks: '%s'
  minOSVersion: {debian: "12"}
  requireDiskEncryption: true
  maxPatchAge: 30d
  maxTokenAge: 1h
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: default}
spec:
  dataClass: records
  allow: [%s]
%s`

func newPostureRig(t *testing.T) *postureRig {
	t.Helper()
	r := &postureRig{t: t, ca: newTestCA(t, "hospital.example"), svidDirs: map[string]string{}}
	r.issuer = filepath.Join(t.TempDir(), "issuer")
	if out, err := runBinary(nil, "posture", "issuer-init", "--dir", r.issuer); err != nil {
		t.Fatalf("issuer-init: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(r.issuer, "jwks.json"))
	if err != nil {
		t.Fatal(err)
	}
	r.jwks = strings.Join(strings.Fields(string(b)), "")
	r.signals = filepath.Join(t.TempDir(), "signals.json")
	os.WriteFile(r.signals, []byte(fmt.Sprintf(`{"device_id":"ws-0042","os":{"name":"debian","version":"12"},"disk_encrypted":true,"firewall":true,"last_patch":%q}`,
		time.Now().Add(-48*time.Hour).UTC().Format(time.RFC3339))), 0o600)
	r.policy = filepath.Join(t.TempDir(), "policy.yaml")
	return r
}

// writePolicy writes the rule set with the given allow list; posture adds
// the route's posture requirement.
func (r *postureRig) writePolicy(posture bool, allow ...string) {
	r.t.Helper()
	quoted := make([]string, len(allow))
	for i, a := range allow {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	extra := ""
	if posture {
		extra = "  postureProfile: workstation\n"
	}
	tmp := r.policy + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf(ruleSet, r.jwks, strings.Join(quoted, ", "), extra)), 0o600); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Rename(tmp, r.policy); err != nil {
		r.t.Fatal(err)
	}
}

func (r *postureRig) svid(id string) string {
	if d, ok := r.svidDirs[id]; ok {
		return d
	}
	d := r.ca.issue(id, time.Hour)
	r.svidDirs[id] = d
	return d
}

func (r *postureRig) startInbound() {
	r.t.Helper()
	env := identityEnv(r.svid("spiffe://hospital.example/eu/pacs"), r.ca.bundle())
	env["MEDGATE_INBOUND_LISTEN"] = "127.0.0.1:0"
	env["MEDGATE_INBOUND_UPSTREAM"] = startEchoApp(r.t)
	env["MEDGATE_POLICY_FILE"] = r.policy
	env["MEDGATE_RELOAD_INTERVAL"] = "100ms"
	r.in = startSidecar(r.t, env)
}

// issue writes a token for holder's SVID to a file and returns its path.
func (r *postureRig) issue(holder string, ttl time.Duration) string {
	r.t.Helper()
	out := filepath.Join(r.t.TempDir(), "token.jws")
	if o, err := runBinary(nil, "posture", "issue", "--dir", r.issuer, "--svid", filepath.Join(r.svid(holder), "svid.pem"),
		"--out", out, "--ttl", ttl.String(), "--signals", r.signals); err != nil {
		r.t.Fatalf("posture issue: %v\n%s", err, o)
	}
	return out
}

func (r *postureRig) outbound(id, tokenFile string) *sidecar {
	r.t.Helper()
	env := identityEnv(r.svid(id), r.ca.bundle())
	env["MEDGATE_OUTBOUND_LISTEN"] = "127.0.0.1:0"
	env["MEDGATE_OUTBOUND_PEER"] = r.in.in
	env["MEDGATE_OUTBOUND_PEER_ID"] = "spiffe://hospital.example/eu/pacs"
	if tokenFile != "" {
		env["MEDGATE_POSTURE_TOKEN_FILE"] = tokenFile
	}
	return startSidecar(r.t, env)
}

func TestE2EAdmissionDenials(t *testing.T) {
	r := newPostureRig(t)
	r.writePolicy(true, "spiffe://hospital.example/eu/lab/*", "spiffe://hospital.example/cn/lab/*", "spiffe://hospital.example/us/lab/*")
	r.startInbound()
	ws1, ws2 := "spiffe://hospital.example/eu/lab/ws1", "spiffe://hospital.example/eu/lab/ws2"
	cn, us := "spiffe://hospital.example/cn/lab/ws9", "spiffe://hospital.example/us/lab/ws5"
	tests := []struct {
		name   string
		id     string
		token  func() string
		reason string
	}{
		{"admitted", ws1, func() string { return r.issue(ws1, time.Hour) }, ""},
		{"no token", ws2, func() string { return "" }, "token_missing"},
		{"token of another identity", ws2, func() string { return r.issue(ws1, time.Hour) }, "token_wrong_subject"},
		{"no transfer rule to CN", cn, func() string { return r.issue(cn, time.Hour) }, "no_transfer_rule"},
		{"de-identify on an opaque route fails closed", us, func() string { return r.issue(us, time.Hour) }, "masking_required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := r.outbound(tt.id, tt.token())
			ok := openLive(t, out.out).echo("PID|1||" + canary)
			if tt.reason == "" {
				if !ok {
					t.Fatal("admitted peer could not move data")
				}
				return
			}
			if ok {
				t.Fatalf("peer moved data, want refusal %s", tt.reason)
			}
			evs := r.in.eventsWith(func(e map[string]any) bool { return e["peer_id"] == tt.id && e["verdict"] == "deny" })
			if len(evs) == 0 || !hasReason(evs[len(evs)-1], tt.reason) {
				t.Fatalf("events for %s: %v, want a deny with %s", tt.id, evs, tt.reason)
			}
		})
	}
	// The admitted session's event names the device and jurisdictions,
	// never the canary.
	evs := r.in.eventsWith(func(e map[string]any) bool { return e["peer_id"] == ws1 && e["verdict"] == "allow" })
	if len(evs) == 0 || evs[0]["device_id"] != "ws-0042" || evs[0]["peer_jurisdiction"] != "EU" || evs[0]["device_os"] != "debian 12" {
		t.Errorf("admission event: %v", evs)
	}
	data, _ := os.ReadFile(r.in.events)
	if strings.Contains(string(data)+r.in.logs.String(), "Zebulon") {
		t.Error("canary in the inbound sidecar's events or logs")
	}
}

func TestE2EPostureLapseClosesSession(t *testing.T) {
	r := newPostureRig(t)
	r.writePolicy(true, "spiffe://hospital.example/eu/lab/*")
	r.startInbound()
	ws1 := "spiffe://hospital.example/eu/lab/ws1"
	const ttl = 3 * time.Second
	token := filepath.Join(t.TempDir(), "token.jws")
	issuer := exec.Command(medgateBin, "posture", "issue", "--dir", r.issuer, "--svid", filepath.Join(r.svid(ws1), "svid.pem"),
		"--out", token, "--ttl", ttl.String(), "--signals", r.signals, "--refresh")
	if err := issuer.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { issuer.Process.Kill(); issuer.Wait() }()
	waitUntil(t, 10*time.Second, func() bool { _, err := os.Stat(token); return err == nil })

	out := r.outbound(ws1, token)
	live := openLive(t, out.out)
	start := time.Now()
	for time.Since(start) < 2*ttl { // outlives the first token thanks to in-band refresh
		if !live.echo("refreshed") {
			t.Fatalf("session closed after %s while the issuer kept refreshing", time.Since(start))
		}
		time.Sleep(200 * time.Millisecond)
	}
	issuer.Process.Kill() // the device stops proving its posture
	issuer.Wait()
	stopped := time.Now()
	for live.echo("still here?") {
		if time.Since(stopped) > ttl+3*time.Second {
			t.Fatal("session outlived its last posture token")
		}
		time.Sleep(100 * time.Millisecond)
	}
	evs := r.in.eventsWith(func(e map[string]any) bool {
		return e["kind"] == "reauthorization" && e["verdict"] == "deny" && hasReason(e, "token_expired")
	})
	if len(evs) == 0 {
		t.Error("no reauthorization event denying the expired token")
	}
}

func TestE2EPolicyChangeClosesOnlyRevokedSessions(t *testing.T) {
	r := newPostureRig(t)
	ws1, ws2 := "spiffe://hospital.example/eu/lab/ws1", "spiffe://hospital.example/eu/lab/ws2"
	r.writePolicy(false, ws1, ws2)
	r.startInbound()
	s1, s2 := openLive(t, r.outbound(ws1, "").out), openLive(t, r.outbound(ws2, "").out)
	if !s1.echo("a") || !s2.echo("a") {
		t.Fatal("sessions not up")
	}
	// A broken policy is refused and changes nothing.
	os.WriteFile(r.policy, []byte("apiVersion: medgate.io/v1\nkind: AccessPolicy\nspec: {allow: [42]}\n"), 0o600)
	waitUntil(t, 10*time.Second, func() bool { return strings.Contains(r.in.logs.String(), "policy file refused") })
	if !s1.echo("b") || !s2.echo("b") {
		t.Fatal("a refused policy file closed sessions")
	}
	r.writePolicy(false, ws1)
	deadline := time.Now().Add(10 * time.Second)
	for s2.echo("c") {
		if time.Now().After(deadline) {
			t.Fatal("revoked session still moves data")
		}
		if !s1.echo("c") {
			t.Fatal("a session the new policy still admits was closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range 20 {
		if !s1.echo(fmt.Sprint("after ", i)) {
			t.Fatal("a session the new policy still admits was closed")
		}
	}
	if evs := r.in.eventsWith(func(e map[string]any) bool {
		return e["kind"] == "reauthorization" && e["peer_id"] == ws2 && hasReason(e, "id_not_allowed")
	}); len(evs) == 0 {
		t.Error("no reauthorization event for the revoked peer")
	}
}

func TestE2EBadPolicyFileNamesFileLineAndField(t *testing.T) {
	r := newPostureRig(t)
	os.WriteFile(r.policy, []byte("apiVersion: medgate.io/v1\nkind: AccessPolicy\nmetadata: {name: default}\nspec:\n  dataClass: records\n  allow: [\"spiffe://x.example/a*\"]\n"), 0o600)
	env := identityEnv(r.svid("spiffe://hospital.example/eu/pacs"), r.ca.bundle())
	env["MEDGATE_INBOUND_LISTEN"] = "127.0.0.1:0"
	env["MEDGATE_INBOUND_UPSTREAM"] = "127.0.0.1:1"
	env["MEDGATE_POLICY_FILE"] = r.policy
	env["MEDGATE_ADMIN_ADDR"] = "off"
	env["MEDGATE_KEYRING"] = testKeyring(t)
	out, err := runBinary(env, "sidecar")
	if err == nil {
		t.Fatal("sidecar started on a bad policy file")
	}
	if !strings.Contains(out, "MEDGATE_POLICY_FILE") || !strings.Contains(out, "policy.yaml:6: spec.allow[0]") {
		t.Errorf("error does not name variable, file, line and field:\n%s", out)
	}
}

func TestE2EPostureCollect(t *testing.T) {
	out, err := runBinary(nil, "posture", "collect")
	if err != nil {
		t.Fatalf("posture collect: %v\n%s", err, out)
	}
	for _, field := range []string{`"device_id"`, `"os"`, `"disk_encrypted"`, `"firewall"`} {
		if !strings.Contains(out, field) {
			t.Errorf("collect output lacks %s:\n%s", field, out)
		}
	}
}
