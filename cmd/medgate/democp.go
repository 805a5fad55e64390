package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/medgate/medgate/controlplane/agent"
	"github.com/medgate/medgate/controlplane/api"
	"github.com/medgate/medgate/controlplane/server"
	"github.com/medgate/medgate/controlplane/spool"
	"github.com/medgate/medgate/controlplane/store"
	"github.com/medgate/medgate/crypto/keys"
	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/posture"
)

// demoControlPlane is the demo's control plane with the hospital's link to
// it: the policy subscription and the event spool of the hospital's
// sidecars.
type demoControlPlane struct {
	store  store.Store
	pub    []byte
	admin  api.PolicyAdminClient
	link   *controlPlaneLink
	agent  *agent.Agent // link.agent
	closed []func()
}

// startDemoControlPlane runs a control plane on loopback with an embedded
// store in dir, an admin client, and a policy agent for the hospital whose
// policies go to engine.
func startDemoControlPlane(ctx context.Context, dir string, cpSrc, adminSrc, hospitalSrc identity.Source, kr keys.Keyring, engine *posture.Engine, log *slog.Logger) (*demoControlPlane, error) {
	d := &demoControlPlane{}
	fail := func(err error) (*demoControlPlane, error) { d.close(); return nil, err }
	signer, err := store.GenerateSigner(filepath.Join(dir, "audit-signing.key"))
	if err != nil {
		return fail(err)
	}
	d.pub = store.PublicKey(signer)
	if d.store, err = store.OpenWith(ctx, store.Config{URL: filepath.Join(dir, "controlplane")}, store.Deps{Signer: signer, Logger: log}); err != nil {
		return fail(err)
	}
	d.closed = append(d.closed, func() { d.store.Close() })
	cp, err := server.New(ctx, server.Config{
		Admins:   mustPatterns("spiffe://hospital.example/admin/*"),
		Sidecars: mustPatterns("spiffe://hospital.example/*"),
		Replica:  "demo",
	}, server.Deps{Store: d.store, Log: log})
	if err != nil {
		return fail(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cp.RecordHandshakeRefusals(identity.GRPCServerConfig(cpSrc, identity.AllowPatterns(mustPatterns("spiffe://hospital.example/*")))))))
	cp.Register(gs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	go gs.Serve(ln)
	runCtx, stop := context.WithCancel(ctx)
	go cp.Run(runCtx)
	d.closed = append(d.closed, func() { stop(); gs.Stop() })
	cpID := identity.AllowPatterns(mustPatterns("spiffe://hospital.example/control-plane"))

	conn, err := agent.Dial(ln.Addr().String(), adminSrc, cpID)
	if err != nil {
		return fail(err)
	}
	d.closed = append(d.closed, func() { conn.Close() })
	d.admin = api.NewPolicyAdminClient(conn)

	// The hospital's sidecars reach it as a sidecar does.
	d.link, err = newControlPlaneLink(ctx, linkConfig{
		address: ln.Addr().String(), serverID: mustPatterns("spiffe://hospital.example/control-plane"),
		stateDir: dir, maxAge: time.Hour, spoolBytes: spool.DefaultMaxBytes, mode: spool.FailClosed,
	}, hospitalSrc, kr, engine, log, prometheus.NewRegistry())
	if err != nil {
		return fail(err)
	}
	d.agent = d.link.agent
	d.closed = append(d.closed, d.link.close)
	go d.link.run(runCtx)
	return d, nil
}

// apply applies a policy as the admin and waits until the hospital's
// sidecars run it; it returns the version and how long that took.
func (d *demoControlPlane) apply(ctx context.Context, text, comment string) (string, time.Duration, error) {
	start := time.Now()
	before := d.agent.Version()
	r, err := d.admin.Apply(ctx, &api.ApplyRequest{Documents: []*api.Document{{Name: "hospital.yaml", Yaml: []byte(text)}}, Comment: comment})
	if err != nil {
		return "", 0, fmt.Errorf("policy apply: %w", err)
	}
	for d.agent.Ready() != nil || d.agent.Version() == before {
		if time.Since(start) > 10*time.Second {
			return "", 0, errors.New("the sidecars did not take the new policy within 10s")
		}
		time.Sleep(2 * time.Millisecond)
	}
	return r.GetVersion(), time.Since(start), nil
}

// drain waits until the control plane has acknowledged every spooled event.
func (d *demoControlPlane) drain() error {
	deadline := time.Now().Add(10 * time.Second)
	for d.link.spool.Stats().Pending > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d access events not acknowledged by the control plane", d.link.spool.Stats().Pending)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func (d *demoControlPlane) close() {
	for i := len(d.closed) - 1; i >= 0; i-- {
		d.closed[i]()
	}
}
