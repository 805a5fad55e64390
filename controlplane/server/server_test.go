package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/medgate/medgate/controlplane/agent"
	"github.com/medgate/medgate/controlplane/api"
	"github.com/medgate/medgate/controlplane/store"
	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/identity/devca"
)

const policy = `apiVersion: medgate.io/v1
kind: Jurisdictions
metadata: {name: sites}
spec:
  codes: [EU]
  bindings: [{id: "spiffe://h.example/*", jurisdiction: EU}]
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: pacs}
spec: {dataClass: imaging, allow: ["spiffe://h.example/lab/*"]}
`

type env struct {
	t     *testing.T
	ca    *devca.CA
	dir   string
	addr  string
	store store.Store
	s     *Server
	clock atomic.Int64 // nanoseconds added to time.Now
}

// start runs a control plane on loopback with an embedded store.
func start(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	ca, err := devca.Init(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString("h.example"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ca: ca, dir: dir}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	if e.store, err = store.Open(context.Background(), filepath.Join(dir, "store"), key); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := New(ctx, Config{
		Admins:   mustPatterns(t, "spiffe://h.example/admin"),
		Sidecars: mustPatterns(t, "spiffe://h.example/sidecar/*"),
		Replica:  "test",
	}, Deps{Store: e.store, Log: slog.New(slog.DiscardHandler), Now: func() time.Time { return time.Now().Add(time.Duration(e.clock.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	e.s = s
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(s.RecordHandshakeRefusals(identity.GRPCServerConfig(e.source("spiffe://h.example/cp"), identity.AllowPatterns(mustPatterns(t, "spiffe://h.example/*")))))))
	s.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	e.addr = ln.Addr().String()
	return e
}

func mustPatterns(t *testing.T, s string) identity.Patterns {
	ps, err := identity.ParsePatterns(s)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func (e *env) source(id string) identity.Source {
	e.t.Helper()
	svid, err := e.ca.Issue(spiffeid.RequireFromString(id), time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	out := filepath.Join(e.dir, filepath.Base(id))
	if err := e.ca.WriteSVID(svid, out); err != nil {
		e.t.Fatal(err)
	}
	src, err := identity.NewFileSource(identity.FileConfig{
		CertFile: filepath.Join(out, devca.SVIDFile), KeyFile: filepath.Join(out, devca.KeyFile),
		Bundles: []string{filepath.Join(out, devca.BundleFile)},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		e.t.Fatal(err)
	}
	return src
}

func (e *env) conn(id string) *grpc.ClientConn {
	e.t.Helper()
	c, err := agent.Dial(e.addr, e.source(id), identity.AllowID(spiffeid.RequireFromString("spiffe://h.example/cp")))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func (e *env) apply(text string) string {
	e.t.Helper()
	r, err := api.NewPolicyAdminClient(e.conn("spiffe://h.example/admin")).Apply(context.Background(),
		&api.ApplyRequest{Documents: []*api.Document{{Name: "p.yaml", Yaml: []byte(text)}}})
	if err != nil {
		e.t.Fatal(err)
	}
	return r.GetVersion()
}

// TestNACKedVersionIsNotResent: a sidecar that refuses a version gets no
// response until a new version exists, then gets that one.
func TestNACKedVersionIsNotResent(t *testing.T) {
	e := start(t)
	e.apply(policy)
	const node = "spiffe://h.example/sidecar/a"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(e.conn(node)).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &discovery.DiscoveryRequest{Node: &core.Node{Id: node}, TypeUrl: api.PolicySetType}
	if err := st.Send(req); err != nil {
		t.Fatal(err)
	}
	first, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	// NACK it.
	if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: api.PolicySetType, ResponseNonce: first.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "cannot enforce"}}); err != nil {
		t.Fatal(err)
	}
	got := make(chan *discovery.DiscoveryResponse, 4)
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				close(got)
				return
			}
			got <- r
		}
	}()
	select {
	case r := <-got:
		t.Fatalf("version %s sent again after its NACK", r.GetVersionInfo())
	case <-time.After(time.Second):
	}
	e.apply(policy + "---\napiVersion: medgate.io/v1\nkind: AccessPolicy\nmetadata: {name: ris}\nspec: {dataClass: imaging, allow: [\"spiffe://h.example/lab/*\"]}\n")
	select {
	case r := <-got:
		if r == nil || r.GetVersionInfo() == first.GetVersionInfo() {
			t.Fatalf("after a new version: %v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the new version was not sent")
	}
	sts, err := e.store.Statuses(context.Background())
	if err != nil || len(sts) != 1 || sts[0].Nacked != first.GetVersionInfo() || sts[0].NackReason != "cannot enforce" {
		t.Fatalf("status after the NACK: %+v, %v", sts, err)
	}
}

// TestOnlyPolicySetsOverADS refuses other resource types and callers that
// are not sidecars.
func TestOnlyPolicySetsOverADS(t *testing.T) {
	e := start(t)
	e.apply(policy)
	for _, c := range []struct {
		caller, typeURL string
		want            codes.Code
	}{
		{"spiffe://h.example/sidecar/a", "type.googleapis.com/envoy.config.cluster.v3.Cluster", codes.InvalidArgument},
		{"spiffe://h.example/admin", api.PolicySetType, codes.PermissionDenied},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := discovery.NewAggregatedDiscoveryServiceClient(e.conn(c.caller)).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: c.caller}, TypeUrl: c.typeURL})
		_, err = st.Recv()
		cancel()
		if status.Code(err) != c.want {
			t.Errorf("%s asking for %s: %v, want %s", c.caller, c.typeURL, err, c.want)
		}
	}
	// Policy admin is for admins.
	_, err := api.NewPolicyAdminClient(e.conn("spiffe://h.example/sidecar/a")).History(context.Background(), &api.HistoryRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("a sidecar read the policy history: %v", err)
	}
}

// TestRefusalsAreAccessEvents: calls refused for the caller's identity or
// node ID are in the audit store, under the control plane's own source,
// and a flood of them is stored as a count.
func TestRefusalsAreAccessEvents(t *testing.T) {
	e := start(t)
	e.apply(policy)
	ctx := context.Background()
	const sidecar = "spiffe://h.example/sidecar/a"

	// A sidecar tries to change policy.
	_, err := api.NewPolicyAdminClient(e.conn(sidecar)).Apply(ctx, &api.ApplyRequest{Documents: []*api.Document{{Name: "p.yaml", Yaml: []byte(policy)}}})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a sidecar applied policy: %v", err)
	}
	// A sidecar subscribes under another sidecar's node ID.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(e.conn(sidecar)).StreamAggregatedResources(sctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "spiffe://h.example/sidecar/b"}, TypeUrl: api.PolicySetType})
	if _, err := st.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a forged node ID: %v", err)
	}
	// An admin sends access events.
	es, err := api.NewAccessLogClient(e.conn("spiffe://h.example/admin")).Stream(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := es.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("an admin sent access events: %v", err)
	}

	type rec struct {
		Kind, Route, Verdict, Outcome, Replica string
		PeerID                                 string `json:"peer_id"`
		PeerAddr                               string `json:"peer_addr"`
		Reasons                                []string
		Count                                  int
	}
	denied := func() ([]store.Entry, []rec) {
		t.Helper()
		entries, err := e.store.Query(ctx, store.Filter{Verdict: "deny"})
		if err != nil {
			t.Fatal(err)
		}
		recs := make([]rec, len(entries))
		for i, en := range entries {
			if err := json.Unmarshal(en.Record, &recs[i]); err != nil {
				t.Fatal(err)
			}
		}
		return entries, recs
	}
	entries, recs := denied()
	want := []struct{ route, peer, reason string }{
		{"admin", sidecar, "not_allowed"},
		{"ads", sidecar, "node_id_mismatch"},
		{"events", "spiffe://h.example/admin", "not_allowed"},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d refusals stored, want %d: %+v", len(recs), len(want), recs)
	}
	for i, w := range want {
		r, en := recs[i], entries[i]
		if r.Kind != "control_plane" || r.Route != w.route || r.PeerID != w.peer || !slices.Equal(r.Reasons, []string{w.reason}) ||
			r.Outcome != "refused" || r.Replica != "test" || !strings.HasPrefix(r.PeerAddr, "127.0.0.1:") {
			t.Errorf("refusal %d: %+v, want route %s, peer %s, reason %s", i, r, w.route, w.peer, w.reason)
		}
		if !strings.HasPrefix(en.Source, "control-plane/test/") || en.Seq != uint64(i+1) {
			t.Errorf("refusal %d stored as %s #%d, want control-plane/test/... #%d", i, en.Source, en.Seq, i+1)
		}
	}

	// Past the limit in a minute, refusals are counted, and the count is
	// stored when the minute is over.
	admin := api.NewPolicyAdminClient(e.conn(sidecar))
	extra := refusalBurst + 7 - len(want)
	for range extra {
		if _, err := admin.History(ctx, &api.HistoryRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("a sidecar read the history: %v", err)
		}
	}
	if _, recs := denied(); len(recs) != refusalBurst {
		t.Fatalf("%d refusals stored within the minute, want the limit, %d", len(recs), refusalBurst)
	}
	e.clock.Add(int64(refusalWindow))
	e.s.flushRefusals(ctx)
	_, recs = denied()
	if len(recs) != refusalBurst+1 {
		t.Fatalf("%d refusals stored after the minute, want %d", len(recs), refusalBurst+1)
	}
	if last := recs[len(recs)-1]; last.Count != 7 || last.Route != "admin" || !slices.Equal(last.Reasons, []string{"over_record_limit"}) {
		t.Errorf("the minute's count: %+v, want 7 admin calls over the limit", last)
	}
}

// TestHandshakeRefusalsAreAccessEvents: a client whose certificate the
// control plane refuses in the TLS handshake is recorded with its address.
func TestHandshakeRefusalsAreAccessEvents(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	// A client from another trust domain, which trusts the control plane.
	other, err := devca.Init(filepath.Join(e.dir, "other-ca"), spiffeid.RequireTrustDomainFromString("other.example"))
	if err != nil {
		t.Fatal(err)
	}
	svid, err := other.Issue(spiffeid.RequireFromString("spiffe://other.example/intruder"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(e.dir, "intruder")
	if err := other.WriteSVID(svid, out); err != nil {
		t.Fatal(err)
	}
	e.source("spiffe://h.example/anyone") // writes h.example's bundle
	src, err := identity.NewFileSource(identity.FileConfig{
		CertFile: filepath.Join(out, devca.SVIDFile), KeyFile: filepath.Join(out, devca.KeyFile),
		Bundles: []string{filepath.Join(out, devca.BundleFile), filepath.Join(e.dir, "anyone", devca.BundleFile)},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c, err := agent.Dial(e.addr, src, identity.AllowID(spiffeid.RequireFromString("spiffe://h.example/cp")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := api.NewPolicyAdminClient(c).History(hctx, &api.HistoryRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("a client from another trust domain: %v, want Unavailable (handshake refused)", err)
	}
	var rec struct {
		Route    string   `json:"route"`
		PeerID   string   `json:"peer_id"`
		PeerAddr string   `json:"peer_addr"`
		Reasons  []string `json:"reasons"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, err := e.store.Query(ctx, store.Filter{Verdict: "deny", Route: "tls"})
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) > 0 {
			if err := json.Unmarshal(entries[0].Record, &rec); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no access event for the refused handshake")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.HasPrefix(rec.PeerAddr, "127.0.0.1:") || len(rec.Reasons) != 1 || rec.Reasons[0] == "" {
		t.Errorf("refused handshake recorded as %+v, want the client's address and a reason", rec)
	}
	t.Logf("recorded: %+v", rec)
}
