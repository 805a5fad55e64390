package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/posture"
	"github.com/medgate/medgate/proxy"
)

const sidecarSynopsis = `Runs a sidecar: inbound routes accept SPIFFE mTLS tunnels from remote sidecars
and forward admitted sessions to the local app; outbound routes accept the
local app's plaintext connections on loopback and carry them to a remote
sidecar. Every setting comes from the environment:`

func runSidecar(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sidecar", sidecarSynopsis, stdout)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: medgate sidecar\n\n%s\n\n", sidecarSynopsis)
		envHelp(stdout, sidecarEnv{})
		fmt.Fprintf(stdout, "  %-32s %s\n", "SPIFFE_ENDPOINT_SOCKET", "standard Workload API address; used when no MEDGATE_ identity is set")
		fmt.Fprint(stdout, `
Routes file (MEDGATE_CONFIG):
  inbound:
    - {name: pacs, listen: "0.0.0.0:8443", upstream: "127.0.0.1:4242", allow: ["spiffe://lab.example/*"], proxyProtocol: false}
  outbound:
    - {name: to-eu, listen: "127.0.0.1:11112", peer: "eu-sidecar:8443", peerID: "spiffe://eu.example/pacs", remoteRoute: pacs}

Signals: SIGTERM or SIGINT stop accepting, let live sessions finish for
MEDGATE_DRAIN_TIMEOUT, then close them.
`)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadSidecarConfig(environ)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.env.LogLevel, cfg.env.LogFormat)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := proxy.NewMetrics(reg)

	g, ctx := errgroup.WithContext(ctx)
	src, closeSrc, err := cfg.env.SVIDSettings.open(ctx, g, cfg.workloadAPI, cfg.env.ReloadInterval, log)
	if err != nil {
		return err
	}
	defer closeSrc()
	svid, err := src.GetX509SVID()
	if err != nil {
		return err
	}

	events, closeEvents, err := newEventSink(cfg.env.EventLog, log)
	if err != nil {
		return fmt.Errorf("MEDGATE_EVENT_LOG: %w", err)
	}
	defer closeEvents()

	deps := proxy.Deps{Source: src, Log: log, Metrics: metrics, Events: events}
	deps.Codecs = codecs
	if cfg.env.Keyring != "" {
		kr, err := openKeyring(cfg.env.Keyring, environ)
		if err != nil {
			return fmt.Errorf("MEDGATE_KEYRING: %w", err)
		}
		deps.Keyring = kr
		if deps.MaskEnv, err = maskEnv(kr); err != nil {
			log.Warn("no pseudonym key", "err", err)
		}
	}
	if cfg.env.PostureTokenFile != "" {
		deps.Posture = tokenFileProvider(cfg.env.PostureTokenFile)
		if _, _, err := deps.Posture(); err != nil {
			log.Warn("posture token not readable yet; sessions wait for it", "err", err)
		}
	}
	policyReady := func() error { return nil } // the routes' allow lists
	var policy *policyWatcher
	var link *controlPlaneLink
	if cfg.env.ControlPlane != "" {
		engine, err := posture.NewEngine(posture.Config{}, posture.Deps{})
		if err != nil {
			return err
		}
		link, err = newControlPlaneLink(ctx, sidecarLinkConfig(cfg), src, deps.Keyring, engine, log, reg)
		if err != nil {
			return err
		}
		defer link.close()
		fileEvents := deps.Events
		deps.Events = func(e proxy.Event) {
			link.record(e) // the durable record first
			fileEvents(e)
		}
		deps.Decider = auditGate{engine, link}
		policyReady = link.agent.Ready
		deps.Profiles = profileSource(engine.Policy)
	} else if cfg.env.PolicyFile != "" {
		policy, err = newPolicyWatcher(cfg.env.PolicyFile, cfg.env.ReloadInterval, log)
		if err != nil {
			return fmt.Errorf("MEDGATE_POLICY_FILE: %w", err)
		}
		deps.Decider = policy.engine
		policyReady = policy.ready
		deps.Profiles = profileSource(policy.engine.Policy)
	} else {
		deps.Profiles = profileSource(nil)
	}
	srv, err := proxy.New(cfg.proxy, deps)
	if err != nil {
		return err
	}
	if policy != nil {
		policy.changed = srv.Reevaluate
		g.Go(func() error { return policy.Run(ctx) })
	}
	if link != nil {
		reevaluate := srv.Reevaluate
		link.reevaluate.Store(&reevaluate)
		g.Go(func() error { return link.run(ctx) })
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	if cfg.env.AdminAddr != "off" {
		admin, err := newAdminServer(cfg.env.AdminAddr, reg, log,
			func() error {
				s, err := src.GetX509SVID()
				if err != nil {
					return fmt.Errorf("no SVID: %w", err)
				}
				if time.Now().After(s.Certificates[0].NotAfter) {
					return fmt.Errorf("SVID expired at %s", s.Certificates[0].NotAfter.UTC().Format(time.RFC3339))
				}
				return nil
			},
			policyReady,
		)
		if err != nil {
			return fmt.Errorf("MEDGATE_ADMIN_ADDR: %w", err)
		}
		g.Go(func() error { return admin.Run(ctx) })
		log.Info("admin endpoint", "addr", admin.ln.Addr().String())
	}
	g.Go(func() error { return srv.Run(ctx) })
	for _, r := range cfg.proxy.Inbound {
		log.Info("inbound route", "route", r.Name, "listen", srv.InboundAddr(r.Listen).String(), "quic", addrString(srv.QUICAddr(r.Listen)), "upstream", r.Upstream, "allow", r.Allow.String(), "inner_layer", !r.DisableInnerLayer)
	}
	for _, r := range cfg.proxy.Outbound {
		log.Info("outbound route", "route", r.Name, "listen", srv.OutboundAddr(r.Name).String(), "peer", r.Peer, "peer_id", r.PeerID.String(), "inner_layer", !r.DisableInnerLayer, "transport", cmp.Or(r.Transport, proxy.TransportTCP))
	}
	warnUDPBuffers(cfg, log)
	log.Info("sidecar started", "spiffe_id", svid.ID.String(), "version", version, "admin", cfg.env.AdminAddr)
	err = g.Wait()
	log.Info("sidecar stopped")
	return err
}

// newEventSink logs every access event and, when path is set, appends it
// to that file as a JSON line (mode 0600).
func newEventSink(path string, log *slog.Logger) (proxy.EventSink, func(), error) {
	var mu sync.Mutex
	var enc *json.Encoder
	closeFn := func() {}
	if path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, nil, err
		}
		enc = json.NewEncoder(f)
		closeFn = func() { f.Close() }
	}
	return func(e proxy.Event) {
		log.Info("access event", "event", e)
		if enc == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if err := enc.Encode(e); err != nil {
			log.Error("access event not written", "path", path, "err", err)
		}
	}, closeFn, nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

// quicBufferBytes is the UDP socket buffer size quic-go asks the kernel for.
const quicBufferBytes = 7 << 20

// warnUDPBuffers tells the operator when the kernel caps UDP buffers below
// what QUIC needs for fast transfers, and how to raise the cap. Root can
// exceed the cap, so it is only checked for other users.
func warnUDPBuffers(cfg *sidecarConfig, log *slog.Logger) {
	usesQUIC := len(cfg.proxy.Inbound) > 0 && !cfg.proxy.DisableQUIC
	for _, r := range cfg.proxy.Outbound {
		usesQUIC = usesQUIC || r.Transport == proxy.TransportQUIC || r.Transport == proxy.TransportAuto
	}
	if !usesQUIC || os.Geteuid() == 0 {
		return
	}
	for _, name := range []string{"rmem_max", "wmem_max"} {
		b, err := os.ReadFile("/proc/sys/net/core/" + name)
		if err != nil {
			continue
		}
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v < quicBufferBytes {
			log.Warn("UDP buffers are capped below what QUIC needs; QUIC throughput will suffer",
				"sysctl", "net.core."+name, "value", v, "want", quicBufferBytes,
				"fix", fmt.Sprintf("sysctl -w net.core.rmem_max=%d net.core.wmem_max=%d", quicBufferBytes, quicBufferBytes))
		}
	}
}

// open starts the identity source the settings name: the Workload API at
// workloadAPI, or the PEM files, which g follows for changes.
func (e SVIDSettings) open(ctx context.Context, g *errgroup.Group, workloadAPI string, interval time.Duration, log *slog.Logger) (identity.Source, func(), error) {
	if workloadAPI != "" {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ws, err := identity.WorkloadAPISource(wctx, workloadAPI)
		cancel()
		if err != nil {
			return nil, nil, fmt.Errorf("MEDGATE_WORKLOAD_API_ADDR: no SVID within 30s: %w", err)
		}
		return ws, func() { ws.Close() }, nil
	}
	fsrc, err := identity.NewFileSource(identity.FileConfig{
		CertFile: e.SVIDCert, KeyFile: e.SVIDKey, Bundles: e.TrustBundle, Interval: interval,
	}, log)
	if err != nil {
		return nil, nil, err
	}
	g.Go(func() error { return fsrc.Run(ctx) })
	return fsrc, func() {}, nil
}
