package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medgate/medgate/controlplane/agent"
	"github.com/medgate/medgate/controlplane/api"
	"github.com/medgate/medgate/controlplane/store/storetest"
	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/identity/devca"
)

const (
	cpID    = "spiffe://hospital.example/control-plane"
	adminID = "spiffe://hospital.example/admin/alice"
	pacsID  = "spiffe://hospital.example/eu/pacs"
)

// controlPlane is a running control plane with what a test needs to drive
// it.
type controlPlane struct {
	*sidecar
	env   map[string]string // its own environment, to restart it
	admin map[string]string // an admin's environment for 'medgate policy'
	store string
	key   string
}

func startControlPlane(t *testing.T, ca *testCA, env map[string]string) *controlPlane {
	t.Helper()
	if env == nil {
		dir := t.TempDir()
		env = identityEnv(ca.issue(cpID, time.Hour), ca.bundle())
		env["MEDGATE_CP_LISTEN"] = "127.0.0.1:0"
		env["MEDGATE_CP_STORE"] = filepath.Join(dir, "store")
		env["MEDGATE_CP_AUDIT_KEY"] = filepath.Join(dir, "audit.key")
		env["MEDGATE_CP_ADMINS"] = "spiffe://hospital.example/admin/*"
		env["MEDGATE_CP_SIDECARS"] = "spiffe://hospital.example/eu/*,spiffe://hospital.example/cn/*"
		env["MEDGATE_CP_REPLICA"] = "cp-1"
	}
	cp := &controlPlane{sidecar: startMedgate(t, "control-plane", env), env: env, store: env["MEDGATE_CP_STORE"], key: env["MEDGATE_CP_AUDIT_KEY"]}
	cp.admin = identityEnv(ca.issue(adminID, time.Hour), ca.bundle())
	cp.admin["MEDGATE_CONTROL_PLANE"] = cp.in
	cp.admin["MEDGATE_CONTROL_PLANE_ID"] = cpID
	return cp
}

// policy runs 'medgate policy ARGS' as the admin.
func (cp *controlPlane) policy(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runBinary(cp.admin, append([]string{"policy"}, args...)...)
}

// apply applies a policy text and returns the version.
func (cp *controlPlane) apply(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := cp.policy(t, "apply", "-f", p)
	if err != nil {
		t.Fatalf("policy apply: %v\n%s", err, out)
	}
	f := strings.Fields(out)
	return f[len(f)-1]
}

// cpPolicy is a policy for an EU PACS that admits allow.
func cpPolicy(allow, extra string) string {
	return `apiVersion: medgate.io/v1
kind: Jurisdictions
metadata: {name: sites}
spec:
  codes: [EU, CN]
  bindings:
    - {id: "spiffe://hospital.example/eu/*", jurisdiction: EU}
    - {id: "spiffe://hospital.example/cn/*", jurisdiction: CN}
---
apiVersion: medgate.io/v1
kind: ResidencyRules
metadata: {name: transfers}
spec:
  rules:
    - {dataClass: imaging, from: EU, to: EU, action: allow}
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata:
  name: default
  annotations: {medgate.io/sidecars: "` + pacsID + `"}
spec:
  dataClass: imaging
  allow: ["` + allow + `"]
` + extra
}

// pacsEnv is the environment of the EU PACS's sidecar taking its policy
// from the control plane at addr; with app, its inbound route leads there.
func pacsEnv(t *testing.T, ca *testCA, app *hashApp, addr string) map[string]string {
	env := identityEnv(ca.issue(pacsID, time.Hour), ca.bundle())
	if app != nil {
		env["MEDGATE_INBOUND_LISTEN"] = "127.0.0.1:0"
		env["MEDGATE_INBOUND_UPSTREAM"] = app.addr
	}
	env["MEDGATE_CONTROL_PLANE"] = addr
	env["MEDGATE_CONTROL_PLANE_ID"] = cpID
	env["MEDGATE_STATE_DIR"] = filepath.Join(t.TempDir(), "state")
	return env
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestE2EControlPlane(t *testing.T) {
	ca := newTestCA(t, "hospital.example")
	cp := startControlPlane(t, ca, nil)
	app := startHashApp(t, false)

	// A sidecar that never had a policy refuses traffic.
	env := pacsEnv(t, ca, app, cp.in)
	env["MEDGATE_POLICY_MAX_AGE"] = "1h"
	pacs := startSidecar(t, env)
	if code, body := pacs.get("/readyz"); code == 200 {
		t.Fatalf("ready without a policy: %s", body)
	}
	lab := startSidecar(t, outboundEnv(ca, "spiffe://hospital.example/eu/lab/ws1", pacs.in, pacsID))
	if _, err := send(lab.out, strings.NewReader("x")); err == nil && app.conns.Load() > 0 {
		t.Fatal("a sidecar without a policy let a session through")
	}
	if len(pacs.eventsWith(func(e map[string]any) bool { return hasReason(e, "no_policy") })) == 0 {
		t.Fatal("no no_policy refusal recorded")
	}

	// The first policy reaches it without a restart.
	v1 := cp.apply(t, cpPolicy("spiffe://hospital.example/eu/lab/*", ""))
	waitFor(t, "the sidecar to be ready", func() bool { code, _ := pacs.get("/readyz"); return code == 200 })
	payload := "PID|||4711||" + canary + "\r"
	if got, err := send(lab.out, strings.NewReader(payload)); err != nil || got != hashOf(strings.NewReader(payload)) {
		t.Fatalf("transfer under v1: %v", err)
	}
	out, err := cp.policy(t, "status")
	if err != nil || !strings.Contains(out, pacsID) || !strings.Contains(out, "in step") {
		t.Fatalf("policy status after v1 (%s): %v\n%s", v1, err, out)
	}

	// A change takes effect live: the lab is no longer allowed.
	v2 := cp.apply(t, cpPolicy("spiffe://hospital.example/eu/radiology/*", ""))
	waitFor(t, "v2 to be refused to the lab", func() bool {
		send(lab.out, strings.NewReader("x"))
		return len(pacs.eventsWith(func(e map[string]any) bool {
			return e["policy_version"] != nil && hasReason(e, "id_not_allowed")
		})) > 0
	})

	// A version the sidecar cannot enforce is NACKed and the old one stays.
	bad := cpPolicy("spiffe://hospital.example/eu/lab/*", `---
apiVersion: medgate.io/v1
kind: MaskingProfile
metadata: {name: broken}
spec: {base: no-such-profile}
`)
	v3 := cp.apply(t, bad)
	waitFor(t, "the NACK in policy status", func() bool {
		out, _ := cp.policy(t, "status")
		return strings.Contains(out, "refused")
	})
	out, _ = cp.policy(t, "status")
	if !strings.Contains(out, "no-such-profile") {
		t.Errorf("status does not give the NACK's reason:\n%s", out)
	}
	// v2 stays in force: the lab, which the refused v3 would admit, is
	// still refused.
	if _, err := send(lab.out, strings.NewReader("x")); err == nil {
		t.Fatal("the NACKed version took effect")
	}
	if code, _ := pacs.get("/readyz"); code != 200 {
		t.Fatal("the sidecar lost its policy after a NACK")
	}
	if n := strings.Count(pacs.logs.String(), "policy set refused"); n > 3 {
		t.Errorf("the NACKed version was sent %d times", n)
	}

	// History and rollback.
	out, err = cp.policy(t, "history")
	for _, v := range []string{v1, v2, v3} {
		if !strings.Contains(out, v) {
			t.Fatalf("history lacks %s: %v\n%s", v, err, out)
		}
	}
	if out, err := cp.policy(t, "rollback", v1); err != nil {
		t.Fatalf("rollback: %v\n%s", err, out)
	}
	waitFor(t, "the rollback to admit the lab again", func() bool {
		got, err := send(lab.out, strings.NewReader(payload))
		return err == nil && got == hashOf(strings.NewReader(payload))
	})
	if out, _ := cp.policy(t, "history"); !strings.Contains(out, "rollback") || !strings.Contains(out, adminID) {
		t.Errorf("history does not record the rollback and who did it:\n%s", out)
	}

	// Only admins change policy.
	notAdmin := identityEnv(ca.issue("spiffe://hospital.example/eu/lab/ws1", time.Hour), ca.bundle())
	notAdmin["MEDGATE_CONTROL_PLANE"] = cp.in
	notAdmin["MEDGATE_CONTROL_PLANE_ID"] = cpID
	if out, err := runBinary(notAdmin, "policy", "rollback", v2); err == nil || !strings.Contains(out, "PermissionDenied") {
		t.Errorf("a non-admin rolled back policy: %v\n%s", err, out)
	}

	// The control plane dies mid-traffic: the sidecar keeps serving on its
	// last good policy and spools its events.
	cp.kill()
	for range 5 {
		if got, err := send(lab.out, strings.NewReader(payload)); err != nil || got != hashOf(strings.NewReader(payload)) {
			t.Fatalf("transfer with the control plane down: %v", err)
		}
	}
	if code, _ := pacs.get("/readyz"); code != 200 {
		t.Fatal("the sidecar stopped serving when the control plane went down")
	}
	cp.env["MEDGATE_CP_LISTEN"] = cp.in // where the sidecar looks for it
	cp2 := startControlPlane(t, ca, cp.env)

	// Every event the sidecar recorded reaches the store exactly once.
	waitStored(t, cp.store, pacs.events)

	// The audit trail verifies, and an edited event is found.
	if err := cp2.stop(); err != nil {
		t.Fatalf("control plane stop: %v", err)
	}
	verify := func() (string, error) {
		return runBinary(nil, "audit", "verify", "--store", cp.store, "--key", cp.key+".pub")
	}
	if out, err := verify(); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("audit verify on an intact store: %v\n%s", err, out)
	}
	log := filepath.Join(cp.store, "events.log")
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte(`"verdict":"allow"`))
	if i < 0 {
		t.Fatal("no allowed event in the store's log")
	}
	copy(data[i:], `"verdict":"deny" `)
	if err := os.WriteFile(log, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := verify(); err == nil || !strings.Contains(out, "TAMPERED") {
		t.Fatalf("audit verify did not find an edited event: %v\n%s", err, out)
	}

	// The canary crossed, but was never logged, spooled or stored.
	for _, dir := range []string{cp.store, env["MEDGATE_STATE_DIR"]} {
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if b, _ := os.ReadFile(p); bytes.Contains(b, []byte("Zebulon")) {
					t.Errorf("canary in %s", p)
				}
			}
			return nil
		})
	}
	for _, p := range []*sidecar{pacs, lab, cp.sidecar, cp2.sidecar} {
		if strings.Contains(p.logs.String(), "Zebulon") {
			t.Error("canary in a log")
		}
	}
}

// eventLines reads a sidecar's event log as canonical JSON lines, sorted.
func eventLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		if len(l) > 0 {
			out = append(out, canonJSON(t, l))
		}
	}
	slices.Sort(out)
	return out
}

func canonJSON(t *testing.T, b []byte) string {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	c, _ := json.Marshal(v)
	return string(c)
}

// storedRecords picks the event records out of 'audit query --format json'.
func storedRecords(t *testing.T, out string) []string {
	var entries []struct {
		Record json.RawMessage `json:"record"`
	}
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("audit query output: %v\n%s", err, out)
	}
	var recs []string
	for _, e := range entries {
		recs = append(recs, canonJSON(t, e.Record))
	}
	return recs
}

// dialAs connects to cp's gRPC API with the SVID in dir, trusting
// bundles.
func dialAs(t *testing.T, cp *controlPlane, dir string, bundles ...string) *grpc.ClientConn {
	t.Helper()
	src, err := identity.NewFileSource(identity.FileConfig{CertFile: filepath.Join(dir, devca.SVIDFile), KeyFile: filepath.Join(dir, devca.KeyFile), Bundles: bundles}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := agent.Dial(cp.in, src, identity.AllowID(spiffeid.RequireFromString(cpID)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestE2EControlPlaneNodeIDMustBeTheSVID subscribes with a node ID that is
// not the caller's SPIFFE ID: the control plane closes the stream without
// sending anything. That refusal, and a handshake from another trust
// domain, are access events in the audit store.
func TestE2EControlPlaneNodeIDMustBeTheSVID(t *testing.T) {
	ca := newTestCA(t, "hospital.example")
	cp := startControlPlane(t, ca, nil)
	cp.apply(t, cpPolicy("spiffe://hospital.example/eu/lab/*", ""))

	conn := dialAs(t, cp, ca.issue("spiffe://hospital.example/eu/intruder", time.Hour), ca.bundle())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: pacsID}, TypeUrl: api.PolicySetType}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err == nil {
		t.Fatalf("got a policy set for another node: version %s", resp.GetVersionInfo())
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("want PermissionDenied, got %v", err)
	}

	// A client from another trust domain is turned away in the handshake.
	other := newTestCA(t, "other.example")
	oconn := dialAs(t, cp, other.issue("spiffe://other.example/intruder", time.Hour), other.bundle(), ca.bundle())
	if _, err := api.NewPolicyAdminClient(oconn).History(ctx, &api.HistoryRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("a client from another trust domain: %v, want Unavailable", err)
	}

	// Both refusals are access events in the audit store, under the control
	// plane's own source.
	out, err := runBinary(nil, "audit", "query", "--store", cp.store, "--verdict", "deny", "--format", "json")
	if err != nil {
		t.Fatalf("audit query: %v\n%s", err, out)
	}
	var entries []struct {
		Source string
		Record json.RawMessage
	}
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("audit query output: %v\n%s", err, out)
	}
	var forged, foreign bool
	for _, e := range entries {
		var r struct {
			Kind    string   `json:"kind"`
			Route   string   `json:"route"`
			PeerID  string   `json:"peer_id"`
			Reasons []string `json:"reasons"`
		}
		json.Unmarshal(e.Record, &r)
		ours := strings.HasPrefix(e.Source, "control-plane/") && r.Kind == "control_plane"
		forged = forged || ours && r.Route == "ads" && r.PeerID == "spiffe://hospital.example/eu/intruder" && slices.Equal(r.Reasons, []string{"node_id_mismatch"})
		foreign = foreign || ours && r.Route == "tls" && r.PeerID == "spiffe://other.example/intruder" && slices.Equal(r.Reasons, []string{"unknown_trust_domain"})
	}
	if !forged {
		t.Errorf("no access event for the forged node ID in the store:\n%s", out)
	}
	if !foreign {
		t.Errorf("no access event for the handshake from another trust domain in the store:\n%s", out)
	}
}

// TestE2EControlPlaneReplicasOnPostgres runs two control planes on one
// PostgreSQL database. A sidecar lists both; when the one it uses dies, it
// carries on with the other: a policy applied through the second replica
// reaches it, and every event lands in the shared store once.
func TestE2EControlPlaneReplicasOnPostgres(t *testing.T) {
	db := storetest.Postgres(t)
	ca := newTestCA(t, "hospital.example")
	dir := t.TempDir()
	cpEnv := func(replica string) map[string]string {
		env := identityEnv(ca.issue(cpID, time.Hour), ca.bundle())
		env["MEDGATE_CP_LISTEN"] = "127.0.0.1:0"
		env["MEDGATE_CP_STORE"] = db
		env["MEDGATE_CP_AUDIT_KEY"] = filepath.Join(dir, "audit.key") // one signing key for the store
		env["MEDGATE_CP_ADMINS"] = "spiffe://hospital.example/admin/*"
		env["MEDGATE_CP_SIDECARS"] = "spiffe://hospital.example/eu/*"
		env["MEDGATE_CP_REPLICA"] = replica
		return env
	}
	cp1 := startControlPlane(t, ca, cpEnv("cp-1"))
	cp2 := startControlPlane(t, ca, cpEnv("cp-2"))
	cp1.apply(t, cpPolicy("spiffe://hospital.example/eu/lab/*", ""))

	app := startHashApp(t, false)
	env := pacsEnv(t, ca, app, cp1.in+","+cp2.in)
	pacs := startSidecar(t, env)
	waitFor(t, "the sidecar to be ready", func() bool { code, _ := pacs.get("/readyz"); return code == 200 })
	lab := startSidecar(t, outboundEnv(ca, "spiffe://hospital.example/eu/lab/ws1", pacs.in, pacsID))
	payload := "PID|||4711||" + canary + "\r"
	if got, err := send(lab.out, strings.NewReader(payload)); err != nil || got != hashOf(strings.NewReader(payload)) {
		t.Fatalf("transfer through replica 1: %v", err)
	}

	// Replica 1 dies; a change applied through replica 2 reaches the sidecar.
	cp1.kill()
	cp2.apply(t, cpPolicy("spiffe://hospital.example/eu/radiology/*", ""))
	waitFor(t, "the policy from replica 2", func() bool {
		send(lab.out, strings.NewReader("x"))
		return len(pacs.eventsWith(func(e map[string]any) bool { return hasReason(e, "id_not_allowed") })) > 0
	})
	if out, err := cp2.policy(t, "status"); err != nil || !strings.Contains(out, "cp-2") || !strings.Contains(out, "in step") {
		t.Errorf("status through replica 2: %v\n%s", err, out)
	}

	waitStored(t, db, pacs.events)
	if out, err := runBinary(nil, "audit", "verify", "--store", db, "--key", filepath.Join(dir, "audit.key.pub")); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("audit verify on the shared store: %v\n%s", err, out)
	}
}

// TestE2EControlPlanePolicyExpires: with the control plane gone, the
// sidecar serves its last good policy for MEDGATE_POLICY_MAX_AGE, across a
// restart of its own, then refuses traffic until the control plane is back.
func TestE2EControlPlanePolicyExpires(t *testing.T) {
	ca := newTestCA(t, "hospital.example")
	cp := startControlPlane(t, ca, nil)
	v1 := cp.apply(t, cpPolicy("spiffe://hospital.example/eu/lab/*", ""))

	// diff and get show what is in force.
	p := filepath.Join(t.TempDir(), "next.yaml")
	os.WriteFile(p, []byte(cpPolicy("spiffe://hospital.example/eu/radiology/*", "")), 0o600)
	if out, err := cp.policy(t, "diff", "-f", p); err != nil || !strings.Contains(out, `-  allow: ["spiffe://hospital.example/eu/lab/*"]`) || !strings.Contains(out, `+  allow: ["spiffe://hospital.example/eu/radiology/*"]`) {
		t.Errorf("policy diff: %v\n%s", err, out)
	}
	if out, err := cp.policy(t, "get"); err != nil || !strings.Contains(out, "version "+v1) || !strings.Contains(out, "kind: AccessPolicy") {
		t.Errorf("policy get: %v\n%s", err, out)
	}

	app := startHashApp(t, false)
	env := pacsEnv(t, ca, app, cp.in)
	env["MEDGATE_POLICY_MAX_AGE"] = "4s"
	pacs := startSidecar(t, env)
	waitFor(t, "the sidecar to be ready", func() bool { code, _ := pacs.get("/readyz"); return code == 200 })
	cp.kill()

	// Events of a session while the control plane is down wait in the
	// spool of a sidecar that is then killed.
	lab := startSidecar(t, outboundEnv(ca, "spiffe://hospital.example/eu/lab/ws1", pacs.in, pacsID))
	if _, err := send(lab.out, strings.NewReader("study")); err != nil {
		t.Fatalf("transfer with the control plane down: %v", err)
	}
	pacs.eventsAtLeast(2, func(e map[string]any) bool { return true })
	waitFor(t, "the events in the spool", func() bool {
		_, m := pacs.get("/metrics")
		return strings.Contains(m, "medgate_events_spooled 2")
	})
	first := pacs
	pacs.kill()

	// Restarted without the control plane, it serves the policy it kept.
	env["MEDGATE_INBOUND_LISTEN"] = pacs.in
	pacs = startSidecar(t, env)
	if code, body := pacs.get("/readyz"); code != 200 {
		t.Fatalf("restarted sidecar does not serve its kept policy: %s", body)
	}
	if _, err := send(lab.out, strings.NewReader("study")); err != nil {
		t.Fatalf("transfer on the kept policy: %v", err)
	}

	// Past the maximum age it refuses.
	waitFor(t, "the policy to expire", func() bool { code, _ := pacs.get("/readyz"); return code != 200 })
	if _, err := send(lab.out, strings.NewReader("study")); err == nil {
		t.Fatal("a sidecar with an expired policy let a session through")
	}
	if len(pacs.eventsWith(func(e map[string]any) bool { return hasReason(e, "no_policy") })) == 0 {
		t.Error("no no_policy refusal recorded after the policy expired")
	}

	// The control plane is back: the policy is confirmed and in force again.
	cp.env["MEDGATE_CP_LISTEN"] = cp.in
	startControlPlane(t, ca, cp.env)
	waitFor(t, "the policy to be confirmed", func() bool { code, _ := pacs.get("/readyz"); return code == 200 })
	waitFor(t, "a transfer after the control plane returned", func() bool {
		_, err := send(lab.out, strings.NewReader("study"))
		return err == nil
	})

	// What both lives of the sidecar recorded, the first killed with
	// events in its spool, reaches the store exactly once.
	waitStored(t, cp.store, first.events, pacs.events)
}

// waitStored waits until the store holds exactly the events in the
// sidecar event logs, each once.
func waitStored(t *testing.T, store string, logs ...string) {
	t.Helper()
	var got, want []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		want = want[:0]
		for _, l := range logs {
			want = append(want, eventLines(t, l)...)
		}
		slices.Sort(want)
		if out, err := runBinary(nil, "audit", "query", "--store", store, "--source", pacsID, "--format", "json"); err == nil {
			got = storedRecords(t, out)
			slices.Sort(got)
		}
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("store holds %d events, the sidecar recorded %d", len(got), len(want))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestE2EControlPlaneFullSpoolFailsClosed: with the control plane out of
// reach and the spool full, a fail-closed route refuses new sessions with
// audit_unavailable, and a drop-oldest route keeps serving.
func TestE2EControlPlaneFullSpoolFailsClosed(t *testing.T) {
	ca := newTestCA(t, "hospital.example")
	cp := startControlPlane(t, ca, nil)
	cp.apply(t, cpPolicy("spiffe://hospital.example/eu/lab/*", `---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: bulk}
spec: {dataClass: imaging, allow: ["spiffe://hospital.example/eu/lab/*"]}
`))
	app := startHashApp(t, false)
	routes := filepath.Join(t.TempDir(), "routes.yaml")
	os.WriteFile(routes, []byte(`inbound:
  - {name: default, listen: "127.0.0.1:0", upstream: "`+app.addr+`"}
  - {name: bulk, listen: "127.0.0.1:0", upstream: "`+app.addr+`", eventSpoolFull: drop-oldest}
`), 0o600)
	env := pacsEnv(t, ca, nil, cp.in)
	env["MEDGATE_CONFIG"] = routes
	env["MEDGATE_EVENT_SPOOL_MB"] = "1"
	pacs := startSidecar(t, env)
	waitFor(t, "the sidecar to be ready", func() bool { code, _ := pacs.get("/readyz"); return code == 200 })
	cp.kill()

	// Sessions on the drop-oldest route fill the 1 MiB spool.
	bulk := outboundEnv(ca, "spiffe://hospital.example/eu/lab/ws1", pacs.in, pacsID)
	bulk["MEDGATE_OUTBOUND_ROUTE"] = "bulk"
	lab := startSidecar(t, bulk)
	critical := startSidecar(t, outboundEnv(ca, "spiffe://hospital.example/eu/lab/ws2", pacs.in, pacsID))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bulkErr atomic.Value
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := send(lab.out, strings.NewReader("x")); err != nil {
					bulkErr.Store(err)
				}
			}
		}()
	}
	refused := false
	for deadline := time.Now().Add(2 * time.Minute); !refused && time.Now().Before(deadline); {
		_, err := send(critical.out, strings.NewReader("x"))
		refused = err != nil
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if !refused {
		t.Fatal("the fail-closed route never refused while the spool filled")
	}
	if err := bulkErr.Load(); err != nil {
		t.Errorf("the drop-oldest route refused a session: %v", err)
	}
	if len(pacs.eventsWith(func(e map[string]any) bool { return hasReason(e, "audit_unavailable") })) == 0 {
		t.Error("no audit_unavailable refusal recorded")
	}
	if _, body := pacs.get("/metrics"); !strings.Contains(body, "medgate_events_lost_total") {
		t.Error("no medgate_events_lost_total metric")
	}
}
