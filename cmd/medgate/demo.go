package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/identity/devca"
	"github.com/medgate/medgate/proxy"
)

const demoSynopsis = `Runs medgate's main job on this machine with embedded defaults and no
outside services: a development CA, a small "PACS" app, an inbound sidecar in
front of it, an outbound sidecar for a lab workstation, a transfer through the
SPIFFE mTLS tunnel, and a second identity that policy refuses. Prints what
happened and exits 0 when everything behaved as it should.`

func runDemo(ctx context.Context, args []string, _ map[string]string, stdout, _ io.Writer) error {
	fs := newFlagSet("demo", demoSynopsis, stdout)
	size := fs.Int("mib", 16, "MiB to send through the tunnel")
	keep := fs.Bool("keep", false, "keep the demo's working directory (CA, SVIDs, logs, events)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "medgate-demo-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	logFile, err := os.Create(filepath.Join(dir, "sidecars.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := slog.New(slog.NewJSONHandler(logFile, nil))
	say := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }

	// Identities.
	td := spiffeid.RequireTrustDomainFromString("hospital.example")
	ca, err := devca.Init(filepath.Join(dir, "ca"), td)
	if err != nil {
		return err
	}
	ids := map[string]string{
		"pacs":    "spiffe://hospital.example/pacs",
		"lab":     "spiffe://hospital.example/lab/workstation-1",
		"billing": "spiffe://hospital.example/billing",
	}
	sources := map[string]identity.Source{}
	for name, id := range ids {
		svid, err := ca.Issue(spiffeid.RequireFromString(id), time.Hour)
		if err != nil {
			return err
		}
		out := filepath.Join(dir, name)
		if err := ca.WriteSVID(svid, out); err != nil {
			return err
		}
		src, err := identity.NewFileSource(identity.FileConfig{
			CertFile: filepath.Join(out, devca.SVIDFile), KeyFile: filepath.Join(out, devca.KeyFile),
			Bundles: []string{filepath.Join(out, devca.BundleFile)},
		}, log)
		if err != nil {
			return err
		}
		sources[name] = src
	}
	say("medgate demo (working directory %s)", dir)
	say("  dev CA for trust domain %s issued SVIDs for the PACS, a lab workstation and billing", td)

	// The legacy app: reads everything, answers with the SHA-256 it saw.
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer app.Close()
	go serveHashApp(app)

	var evMu sync.Mutex
	var events []proxy.Event
	sink := func(e proxy.Event) {
		evMu.Lock()
		events = append(events, e)
		evMu.Unlock()
		log.Info("access event", "event", e)
	}
	allow, _ := identity.ParsePatterns("spiffe://hospital.example/lab/*")
	inbound, err := proxy.New(proxy.Config{Inbound: []proxy.InboundRoute{{
		Name: "pacs", Listen: "127.0.0.1:0", Upstream: app.Addr().String(), Allow: allow,
	}}}, proxy.Deps{Source: sources["pacs"], Log: log, Events: sink})
	if err != nil {
		return err
	}
	if err := inbound.Listen(); err != nil {
		return err
	}
	peer := inbound.InboundAddr("127.0.0.1:0").String()
	outbound := func(name string) (*proxy.Server, error) {
		s, err := proxy.New(proxy.Config{Outbound: []proxy.OutboundRoute{{
			Name: "to-pacs", Listen: "127.0.0.1:0", Peer: peer, PeerID: spiffeid.RequireFromString(ids["pacs"]), RemoteRoute: "pacs",
		}}}, proxy.Deps{Source: sources[name], Log: log, Events: sink})
		if err != nil {
			return nil, err
		}
		return s, s.Listen()
	}
	lab, err := outbound("lab")
	if err != nil {
		return err
	}
	billing, err := outbound("billing")
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, s := range []*proxy.Server{inbound, lab, billing} {
		wg.Add(1)
		go func() { defer wg.Done(); s.Run(runCtx) }()
	}
	defer func() { stop(); wg.Wait() }()
	say("  inbound sidecar (PACS, admits spiffe://hospital.example/lab/*) on %s", peer)

	// 1. The lab workstation sends a study.
	payload := make([]byte, *size<<20)
	rand.Read(payload)
	sum := sha256.Sum256(payload)
	start := time.Now()
	answer, err := sendThrough(lab.OutboundAddr("to-pacs").String(), payload)
	if err != nil {
		return fmt.Errorf("demo: transfer through the tunnel failed: %w", err)
	}
	took := time.Since(start)
	if answer != hex.EncodeToString(sum[:]) {
		return errors.New("demo: the PACS received different bytes than were sent")
	}
	say("  lab workstation -> outbound sidecar -> TLS 1.3 mTLS tunnel -> inbound sidecar -> PACS:")
	say("    %d MiB in %s, SHA-256 identical at both ends (%s...)", *size, took.Round(time.Millisecond), answer[:16])

	// 2. Billing is a valid identity in the same trust domain, but not allowed.
	if _, err := sendThrough(billing.OutboundAddr("to-pacs").String(), []byte("not for billing")); err == nil {
		return errors.New("demo: billing was not refused")
	}
	var refused *proxy.Event
	deadline := time.Now().Add(5 * time.Second)
	for refused == nil && time.Now().Before(deadline) {
		evMu.Lock()
		for i := range events {
			if e := events[i]; e.Kind == "admission" && e.Direction == "inbound" && e.Verdict == "deny" && e.PeerID == ids["billing"] {
				refused = &e
			}
		}
		evMu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	if refused == nil {
		return errors.New("demo: no access event for the refused identity")
	}
	say("  %s refused before any byte reached the PACS: reason %s (access event recorded)", ids["billing"], strings.Join(refused.Reasons, ","))

	stop()
	wg.Wait()
	evMu.Lock()
	say("  %d access events recorded", len(events))
	evMu.Unlock()
	if *keep {
		say("  CA, SVIDs and sidecar logs kept in %s", dir)
	} else {
		say("  (run with --keep to keep the CA, SVIDs and sidecar logs)")
	}
	say("ok")
	return nil
}

// sendThrough sends payload to addr, half-closes, and returns the app's
// one-line answer.
func sendThrough(addr string, payload []byte) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("no answer: %w", err)
	}
	if err := <-errc; err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

func serveHashApp(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			h := sha256.New()
			if _, err := io.Copy(h, c); err != nil {
				return
			}
			fmt.Fprintf(c, "%x\n", h.Sum(nil))
		}()
	}
}
