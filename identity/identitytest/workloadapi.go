// Package identitytest provides an in-process SPIFFE Workload API server
// for tests. It speaks the real protocol (the go-spiffe workload proto over
// gRPC on a unix socket), checks the security header the real agent checks,
// and can rotate the SVID it serves while clients are connected.
package identitytest

import (
	"context"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// WorkloadAPI is a Workload API server serving one X.509-SVID at a time.
type WorkloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	// Addr is the address clients dial, unix:///abs/path.
	Addr string

	mu      sync.Mutex
	resp    *workload.X509SVIDResponse
	changed chan struct{} // closed and replaced on every SetSVID
	fetches int
}

// NewWorkloadAPI starts a server on a fresh unix socket; it stops when the
// test ends. It serves nothing until SetSVID is called: clients wait.
func NewWorkloadAPI(tb testing.TB) *WorkloadAPI {
	tb.Helper()
	dir, err := os.MkdirTemp("", "wlapi")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		tb.Fatal(err)
	}
	w := &WorkloadAPI{Addr: "unix://" + path, changed: make(chan struct{})}
	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, w)
	go srv.Serve(ln)
	tb.Cleanup(srv.Stop)
	return w
}

// SetSVID replaces the SVID and trust bundle served; connected clients
// receive the update at once.
func (w *WorkloadAPI) SetSVID(svid *x509svid.SVID, bundle []*x509.Certificate) error {
	certs, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return err
	}
	var chain, roots []byte
	for _, c := range svid.Certificates {
		chain = append(chain, c.Raw...)
	}
	for _, c := range bundle {
		roots = append(roots, c.Raw...)
	}
	resp := &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
		SpiffeId:    svid.ID.String(),
		X509Svid:    chain,
		X509SvidKey: certs,
		Bundle:      roots,
	}}}
	w.mu.Lock()
	w.resp = resp
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
	return nil
}

// Fetches returns how many FetchX509SVID streams have been opened.
func (w *WorkloadAPI) Fetches() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fetches
}

// FetchX509SVID implements the Workload API: it sends the current SVID and
// every later one until the client goes away.
func (w *WorkloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	if err := checkHeader(stream.Context()); err != nil {
		return err
	}
	w.mu.Lock()
	w.fetches++
	w.mu.Unlock()
	for {
		w.mu.Lock()
		resp, changed := w.resp, w.changed
		w.mu.Unlock()
		if resp != nil {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

func checkHeader(ctx context.Context) error {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok || len(md.Get("workload.spiffe.io")) != 1 || md.Get("workload.spiffe.io")[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}
