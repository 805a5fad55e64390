package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"net"
	"path/filepath"
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
	}, Deps{Store: e.store, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(identity.GRPCServerConfig(e.source("spiffe://h.example/cp"), identity.AllowPatterns(mustPatterns(t, "spiffe://h.example/*"))))))
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
