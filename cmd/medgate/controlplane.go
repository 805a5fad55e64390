package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/medgate/medgate/controlplane/server"
	"github.com/medgate/medgate/controlplane/store"
	"github.com/medgate/medgate/identity"
)

// controlPlaneEnv is the control plane's configuration.
type controlPlaneEnv struct {
	SVIDSettings

	Listen   string `env:"CP_LISTEN" envDefault:"0.0.0.0:7443" help:"host:port of the gRPC API (ADS, access events, policy admin) over SPIFFE mTLS"`
	Store    string `env:"CP_STORE" envDefault:"/var/lib/medgate/controlplane" help:"audit and policy store: a directory (embedded store) or postgres://... shared by replicas"`
	AuditKey string `env:"CP_AUDIT_KEY" envDefault:"/var/lib/medgate/audit-signing.key" help:"Ed25519 key that signs audit checkpoints, created on first start with its public key beside it (.pub) for 'medgate audit verify'"`
	Admins   string `env:"CP_ADMINS" help:"SPIFFE IDs (patterns) allowed to apply, roll back and read policy, comma-separated (required)"`
	Sidecars string `env:"CP_SIDECARS" help:"SPIFFE IDs (patterns) of the sidecars allowed to subscribe and send access events, comma-separated (required)"`
	Replica  string `env:"CP_REPLICA" help:"this replica's name in 'medgate policy status' (default: the host name)"`

	AdminAddr      string        `env:"ADMIN_ADDR" envDefault:"127.0.0.1:9902" help:"address of /healthz, /readyz and /metrics; off turns it off"`
	LogLevel       string        `env:"LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error"`
	LogFormat      string        `env:"LOG_FORMAT" help:"text or json; default text with colour on a terminal, json otherwise"`
	ReloadInterval time.Duration `env:"RELOAD_INTERVAL" envDefault:"2s" help:"how often the SVID files are checked for changes"`
}

const controlPlaneSynopsis = `Runs the control plane: serves each sidecar its policy over ADS (xDS), takes
the sidecars' access events into a hash-chained audit store, and lets the
admins in MEDGATE_CP_ADMINS change policy ('medgate policy'). Several
replicas can share a PostgreSQL store. Every setting comes from the
environment:`

func runControlPlane(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	fset := newFlagSet("control-plane", controlPlaneSynopsis, stdout)
	fset.Usage = func() {
		fmt.Fprintf(stdout, "Usage: medgate control-plane\n\n%s\n\n", controlPlaneSynopsis)
		envHelp(stdout, controlPlaneEnv{})
	}
	if err := parseFlags(fset, args); err != nil {
		return err
	}
	e, err := env.ParseAsWithOptions[controlPlaneEnv](env.Options{Environment: environ, Prefix: envPrefix})
	errs, _ := parseErrors(err, controlPlaneEnv{})
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s", envPrefix, name, fmt.Sprintf(format, args...)))
	}
	workloadAPI := e.SVIDSettings.check(environ, bad)
	patterns := func(name, v string) identity.Patterns {
		if strings.TrimSpace(v) == "" {
			bad(name, "required")
			return nil
		}
		ps, err := identity.ParsePatterns(v)
		if err != nil {
			bad(name, "%v", err)
		}
		return ps
	}
	admins := patterns("CP_ADMINS", e.Admins)
	sidecars := patterns("CP_SIDECARS", e.Sidecars)
	if _, _, err := net.SplitHostPort(e.Listen); err != nil {
		bad("CP_LISTEN", "%v", err)
	}
	if e.Replica == "" {
		e.Replica, _ = os.Hostname()
	}
	if len(errs) > 0 {
		return fmt.Errorf("configuration:\n%w", joinLines(errs))
	}
	log := newLogger(stderr, e.LogLevel, e.LogFormat)

	signer, err := loadOrCreateSigner(e.AuditKey, log.Info)
	if err != nil {
		return fmt.Errorf("MEDGATE_CP_AUDIT_KEY: %w", err)
	}
	if !strings.HasPrefix(e.Store, "postgres") {
		if err := os.MkdirAll(strings.TrimPrefix(e.Store, "file:"), 0o700); err != nil {
			return fmt.Errorf("MEDGATE_CP_STORE: %w", err)
		}
	}
	st, err := store.OpenWith(ctx, store.Config{URL: e.Store}, store.Deps{Signer: signer, Logger: log})
	if err != nil {
		return fmt.Errorf("MEDGATE_CP_STORE: %w", err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("closing the store", "err", err)
		}
	}()

	g, ctx := errgroup.WithContext(ctx)
	src, closeSrc, err := e.SVIDSettings.open(ctx, g, workloadAPI, e.ReloadInterval, log)
	if err != nil {
		return err
	}
	defer closeSrc()
	svid, err := src.GetX509SVID()
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cp, err := server.New(ctx, server.Config{Admins: admins, Sidecars: sidecars, Replica: e.Replica}, server.Deps{Store: st, Log: log, Registerer: reg})
	if err != nil {
		return err
	}
	tlsCfg := cp.RecordHandshakeRefusals(identity.GRPCServerConfig(src, identity.AllowPatterns(append(append(identity.Patterns{}, admins...), sidecars...))))
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.MaxRecvMsgSize(32<<20),
	)
	cp.Register(gs)
	ln, err := net.Listen("tcp", e.Listen)
	if err != nil {
		return fmt.Errorf("MEDGATE_CP_LISTEN: %w", err)
	}

	if e.AdminAddr != "off" {
		// Ready while the store answers: a replica that cannot store events
		// or read policy should get no traffic.
		storeReady := func() error {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if _, err := st.HighWater(rctx, svid.ID.String()); err != nil {
				return fmt.Errorf("store: %w", err)
			}
			return nil
		}
		admin, err := newAdminServer(e.AdminAddr, reg, log, storeReady)
		if err != nil {
			return fmt.Errorf("MEDGATE_ADMIN_ADDR: %w", err)
		}
		g.Go(func() error { return admin.Run(ctx) })
		log.Info("admin endpoint", "addr", admin.ln.Addr().String())
	}
	g.Go(func() error { return cp.Run(ctx) })
	g.Go(func() error {
		<-ctx.Done()
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			gs.Stop()
		}
		return nil
	})
	g.Go(func() error {
		if err := gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return err
		}
		return nil
	})
	log.Info("control plane started", "spiffe_id", svid.ID.String(), "listen", ln.Addr().String(), "replica", e.Replica, "store", storeName(e.Store), "version", version)
	err = g.Wait()
	log.Info("control plane stopped")
	return err
}

// loadOrCreateSigner loads the checkpoint key at path, creating it (and
// its public key at path.pub) when it does not exist.
func loadOrCreateSigner(path string, info func(string, ...any)) ([]byte, error) {
	key, err := store.LoadSigner(path)
	if err == nil {
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	key, err = store.GenerateSigner(path)
	if err != nil {
		return nil, err
	}
	if err := store.WritePublicKey(path+".pub", store.PublicKey(key)); err != nil {
		return nil, err
	}
	info("created the audit checkpoint key", "key", path, "public_key", path+".pub")
	return key, nil
}

// storeName shows a store URL without its password.
func storeName(u string) string {
	if i := strings.Index(u, "@"); i > 0 && strings.HasPrefix(u, "postgres") {
		if j := strings.Index(u, "://"); j > 0 {
			return u[:j+3] + "***" + u[i:]
		}
	}
	return u
}
