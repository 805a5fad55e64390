package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

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
	"github.com/medgate/medgate/proxy"
)

// demoControlPlane is the demo's control plane with the hospital's link to
// it: the policy subscription and the event spool of the hospital's
// sidecars.
type demoControlPlane struct {
	store  store.Store
	pub    []byte
	admin  api.PolicyAdminClient
	agent  *agent.Agent
	spool  *spool.Spool
	closed []func()
}

// startDemoControlPlane runs a control plane on loopback with an embedded
// store in dir, an admin client, and a policy agent for the hospital whose
// policies go to engine (then reevaluate, when set).
func startDemoControlPlane(ctx context.Context, dir string, cpSrc, adminSrc, hospitalSrc identity.Source, kr keys.Keyring, engine *posture.Engine, reevaluate *func(), log *slog.Logger) (*demoControlPlane, error) {
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
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(identity.GRPCServerConfig(cpSrc, identity.AllowPatterns(mustPatterns("spiffe://hospital.example/*"))))))
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

	d.agent, err = agent.New(agent.Config{
		Address:   ln.Addr().String(),
		ServerID:  mustPatterns("spiffe://hospital.example/control-plane"),
		CacheFile: filepath.Join(dir, "policy.pb"),
		MaxAge:    time.Hour,
	}, agent.Deps{Source: hospitalSrc, Log: log, Check: checkPolicyProfiles, Apply: func(p *posture.Policy) {
		engine.SetPolicy(p)
		if *reevaluate != nil {
			(*reevaluate)()
		}
	}})
	if err != nil {
		return fail(err)
	}
	d.closed = append(d.closed, func() { d.agent.Close() })
	if d.spool, err = spool.Open(ctx, filepath.Join(dir, "events"), kr, spool.Options{}); err != nil {
		return fail(err)
	}
	d.closed = append(d.closed, func() { d.spool.Close() })
	go d.agent.Run(runCtx)
	go agent.NewShipper(d.agent.Conn(), d.spool, log).Run(runCtx)
	return d, nil
}

// record spools an access event for the control plane.
func (d *demoControlPlane) record(e proxy.Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = d.spool.Append(b, spool.FailClosed)
	return err
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
	for d.spool.Stats().Pending > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d access events not acknowledged by the control plane", d.spool.Stats().Pending)
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
