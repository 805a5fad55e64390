package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
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

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/medgate/medgate/controlplane/api"
	"github.com/medgate/medgate/controlplane/store"
	"github.com/medgate/medgate/crypto/keys"
	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/identity/devca"
	"github.com/medgate/medgate/posture"
	"github.com/medgate/medgate/proxy"
	"github.com/medgate/medgate/proxy/hl7"
)

// demoPolicy is the demo's policy; %s is the MDM's JWKS.
const demoPolicy = `apiVersion: medgate.io/v1
kind: Jurisdictions
metadata: {name: hospital}
spec:
  codes: [EU, US]
  bindings:
    - {id: "spiffe://hospital.example/*", jurisdiction: EU}
    - {id: "spiffe://hospital.example/us/*", jurisdiction: US}
---
apiVersion: medgate.io/v1
kind: ResidencyRules
metadata: {name: in-house}
spec:
  rules:
    - {dataClass: imaging, from: EU, to: EU, action: allow}
    - {dataClass: records, from: EU, to: US, action: deidentify, maskingProfile: hipaa-safe-harbor}
---
apiVersion: medgate.io/v1
kind: PostureProfile
metadata: {name: clinical-device}
spec:
  issuers: [{name: "https://mdm.hospital.example", jwks: '%s'}]
  minOSVersion: {debian: "12"}
  requireDiskEncryption: true
  maxPatchAge: 30d
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: pacs}
spec:
  dataClass: imaging
  allow: ["spiffe://hospital.example/lab/*"]
  postureProfile: clinical-device
---
apiVersion: medgate.io/v1
kind: MaskingProfile
metadata: {name: hipaa-safe-harbor}
spec: {reference: "45 CFR 164.514(b)(2); the built-in profile"}
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: to-ehr}
spec: {direction: outbound, dataClass: records, allow: ["spiffe://hospital.example/us/*"]}
`

const demoSynopsis = `Runs medgate's main job on this machine with embedded defaults and no
outside services: a development CA, a small "PACS" app, an inbound sidecar in
front of it, an outbound sidecar for a lab workstation, a transfer through the
SPIFFE mTLS tunnel, identities that policy refuses, an HL7 feed de-identified
across a border, a control plane whose policy change takes effect live, and
the audit report at the end. Prints what happened and exits 0 when
everything behaved as it should.`

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
		"laptop":  "spiffe://hospital.example/lab/laptop-7",
		"billing": "spiffe://hospital.example/billing",
		"ris":     "spiffe://hospital.example/ris",
		"ehr":     "spiffe://hospital.example/us/ehr",
		"cp":      "spiffe://hospital.example/control-plane",
		"admin":   "spiffe://hospital.example/admin/security",
	}
	sources := map[string]identity.Source{}
	leaves := map[string]*x509.Certificate{}
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
		leaves[name] = svid.Certificates[0]
	}
	say("medgate demo (working directory %s)", dir)
	say("  dev CA for trust domain %s issued SVIDs for the PACS, a lab workstation, a laptop, billing,", td)
	say("    the hospital's RIS and an EHR in the US")

	// A posture issuer, standing in for the hospital's MDM, and the
	// policy: the lab may reach the PACS from a compliant device only.
	issuerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	issuer, err := posture.NewSigner(issuerKey, "demo-mdm-1")
	if err != nil {
		return err
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{issuer.PublicJWK()}})
	policyText := fmt.Sprintf(demoPolicy, jwks)
	engine, err := posture.NewEngine(posture.Config{}, posture.Deps{})
	if err != nil {
		return err
	}
	// The hospital's envelope keyring: both sidecars seal what they send
	// under data keys it wraps, inside the TLS tunnel.
	kr, err := keys.InitFile(filepath.Join(dir, "keys", "keyring.json"))
	if err != nil {
		return err
	}

	// The control plane: the security team applies the policy there; the
	// hospital's sidecars take it over xDS and report every access event.
	cp, err := startDemoControlPlane(ctx, dir, sources["cp"], sources["admin"], sources["pacs"], kr, engine, log)
	if err != nil {
		return err
	}
	defer cp.close()
	v1, took, err := cp.apply(ctx, policyText, "hospital policy")
	if err != nil {
		return err
	}
	say("  control plane on loopback (xDS over SPIFFE mTLS, hash-chained audit store): %s applied", ids["admin"])
	say("    policy %s; the hospital's sidecars ACKed it (their compiled set: %s) and put it in force in %s", v1, cp.agent.Version(), took.Round(time.Millisecond))
	tokenFor := func(name string, diskEncrypted bool) proxy.PostureProvider {
		return func() ([]byte, time.Time, error) {
			now := time.Now()
			c := posture.Claims{
				Issuer: "https://mdm.hospital.example", Subject: spiffeid.RequireFromString(ids[name]), DeviceID: "device-" + name,
				OS: &posture.OSInfo{Name: "debian", Version: "12"}, DiskEncrypted: &diskEncrypted,
				LastPatch: now.Add(-72 * time.Hour), IssuedAt: now, Expiry: now.Add(10 * time.Minute), SPKIHash: posture.SPKIHash(leaves[name]),
			}
			tok, err := posture.Issue(issuer, c)
			return tok, c.Expiry, err
		}
	}

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
		cp.link.record(e)
	}
	inbound, err := proxy.New(proxy.Config{Inbound: []proxy.InboundRoute{{
		Name: "pacs", Listen: "127.0.0.1:0", Upstream: app.Addr().String(),
	}}}, proxy.Deps{Source: sources["pacs"], Decider: engine, Log: log, Events: sink, Keyring: kr})
	if err != nil {
		return err
	}
	if err := inbound.Listen(); err != nil {
		return err
	}
	reevaluate := inbound.Reevaluate
	cp.link.reevaluate.Store(&reevaluate)
	peer := inbound.InboundAddr("127.0.0.1:0").String()
	outbound := func(name string, token proxy.PostureProvider) (*proxy.Server, error) {
		s, err := proxy.New(proxy.Config{Outbound: []proxy.OutboundRoute{{
			Name: "to-pacs", Listen: "127.0.0.1:0", Peer: peer, PeerID: spiffeid.RequireFromString(ids["pacs"]), RemoteRoute: "pacs",
		}}}, proxy.Deps{Source: sources[name], Log: log, Events: sink, Posture: token, Keyring: kr})
		if err != nil {
			return nil, err
		}
		return s, s.Listen()
	}
	lab, err := outbound("lab", tokenFor("lab", true))
	if err != nil {
		return err
	}
	laptop, err := outbound("laptop", tokenFor("laptop", false))
	if err != nil {
		return err
	}
	billing, err := outbound("billing", nil)
	if err != nil {
		return err
	}
	// An HL7 feed from the EU hospital's RIS to an EHR in the US: the
	// RIS's sidecar de-identifies what leaves the EU.
	ehrApp, ehrReceived, err := mllpReceiver()
	if err != nil {
		return err
	}
	defer ehrApp.Close()
	env, err := maskEnv(kr)
	if err != nil {
		return err
	}
	ehr, err := proxy.New(proxy.Config{Inbound: []proxy.InboundRoute{{
		Name: "default", Listen: "127.0.0.1:0", Upstream: ehrApp.Addr().String(), Allow: mustPatterns("spiffe://hospital.example/*"),
	}}}, proxy.Deps{Source: sources["ehr"], Log: log, Events: sink, Keyring: kr})
	if err != nil {
		return err
	}
	if err := ehr.Listen(); err != nil {
		return err
	}
	ris, err := proxy.New(proxy.Config{Outbound: []proxy.OutboundRoute{{
		Name: "to-ehr", Listen: "127.0.0.1:0", Peer: ehr.InboundAddr("127.0.0.1:0").String(), PeerID: spiffeid.RequireFromString(ids["ehr"]), Protocol: "hl7",
	}}}, proxy.Deps{Source: sources["ris"], Decider: engine, Log: log, Events: sink, Keyring: kr,
		Codecs: codecs, Profiles: profileSource(engine.Policy), MaskEnv: env})
	if err != nil {
		return err
	}
	if err := ris.Listen(); err != nil {
		return err
	}

	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, s := range []*proxy.Server{inbound, lab, laptop, billing, ehr, ris} {
		wg.Add(1)
		go func() { defer wg.Done(); s.Run(runCtx) }()
	}
	defer func() { stop(); wg.Wait() }()
	say("  inbound sidecar in front of the PACS on %s, policy %s:", peer, engine.Policy().Version)
	say("    spiffe://hospital.example/lab/* from a device with an encrypted disk, Debian 12 or later, patched within 30 days")

	// 1. The lab workstation sends a study.
	payload := make([]byte, *size<<20)
	rand.Read(payload)
	sum := sha256.Sum256(payload)
	start := time.Now()
	answer, err := sendThrough(lab.OutboundAddr("to-pacs").String(), payload)
	if err != nil {
		return fmt.Errorf("demo: transfer through the tunnel failed: %w", err)
	}
	took = time.Since(start)
	if answer != hex.EncodeToString(sum[:]) {
		return errors.New("demo: the PACS received different bytes than were sent")
	}
	say("  lab workstation -> outbound sidecar -> TLS 1.3 mTLS tunnel -> inbound sidecar -> PACS,")
	say("    admitted on its SVID and a posture token the MDM signed for it; inside TLS every byte")
	say("    is sealed again with AES-256-GCM under data keys wrapped by the hospital's keyring:")
	say("    %d MiB in %s, SHA-256 identical at both ends (%s...)", *size, took.Round(time.Millisecond), answer[:16])

	// 2. Refusals: a lab laptop whose disk is not encrypted, and billing,
	// a valid identity the policy does not name.
	for _, who := range []struct {
		name string
		srv  *proxy.Server
	}{{"laptop", laptop}, {"billing", billing}} {
		if _, err := sendThrough(who.srv.OutboundAddr("to-pacs").String(), []byte("not for you")); err == nil {
			return fmt.Errorf("demo: %s was not refused", who.name)
		}
		var refused *proxy.Event
		deadline := time.Now().Add(5 * time.Second)
		for refused == nil && time.Now().Before(deadline) {
			evMu.Lock()
			for i := range events {
				if e := events[i]; e.Kind == "admission" && e.Direction == "inbound" && e.Verdict == "deny" && e.PeerID == ids[who.name] {
					refused = &e
				}
			}
			evMu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
		if refused == nil {
			return fmt.Errorf("demo: no access event for the refused %s", who.name)
		}
		say("  %s refused before any byte reached the PACS: %s", ids[who.name], strings.Join(refused.Reasons, ", "))
	}

	// 3. The HL7 feed crosses the border de-identified.
	const adt = "MSH|^~\\&|RIS|EU-HOSPITAL|EHR|US-CLINIC|20261122091500||ADT^A01|DEMO0001|P|2.5\r" +
		"PID|1||4711^^^EUH^MR||DOE^JANE^Q||19700101|F|||12 Rue Exemple^^Lyon^^69001^FR||+33-4-5555-0101\r" +
		"NK1|1|DOE^JOHN|SPO\r"
	ack, err := sendMLLP(ris.OutboundAddr("to-ehr").String(), adt)
	if err != nil {
		return fmt.Errorf("demo: HL7 feed: %w", err)
	}
	var got string
	if all := ehrReceived(); len(all) > 0 {
		got = all[len(all)-1]
	}
	if !strings.Contains(ack, "MSA|AA") || got == "" || strings.Contains(got, "DOE") || strings.Contains(got, "4711") {
		return errors.New("demo: the HL7 message did not arrive de-identified, or its ACK did not come back")
	}
	say("  EU RIS -> outbound sidecar (de-identifies what leaves the EU: hipaa-safe-harbor) -> US EHR:")
	say("    sent     %s", segment(adt, "PID"))
	say("    arrived  %s", segment(got, "PID"))
	say("    the EHR's ACK came back to the RIS: %s", segment(ack, "MSA"))

	// 4. The security team changes policy; the sidecars take it live.
	v1Set := cp.agent.Version()
	var v2 string
	v2, took, err = cp.apply(ctx, strings.Replace(policyText, `allow: ["spiffe://hospital.example/lab/*"]`, `allow: ["spiffe://hospital.example/radiology/*"]`, 1), "PACS for radiology only")
	if err != nil {
		return err
	}
	say("  the security team narrows the PACS to radiology: policy %s (set %s) in force in %s, no restart", v2, cp.agent.Version(), took.Round(time.Millisecond))
	if _, err := sendThrough(lab.OutboundAddr("to-pacs").String(), []byte("study")); err == nil {
		return errors.New("demo: the lab still reached the PACS after the policy change")
	}
	say("    the lab workstation's next transfer is refused: id_not_allowed")
	if _, err := cp.admin.Rollback(ctx, &api.RollbackRequest{Version: v1}); err != nil {
		return fmt.Errorf("demo: rollback: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for cp.agent.Version() != v1Set {
		if time.Now().After(deadline) {
			return errors.New("demo: the rollback did not reach the sidecars")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for time.Now().Before(deadline) {
		if _, err = sendThrough(lab.OutboundAddr("to-pacs").String(), []byte("study")); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("demo: the lab was not admitted after the rollback: %w", err)
	}
	say("    rolled back to %s: the lab is admitted again", v1)

	stop()
	wg.Wait()

	// 5. The audit trail: every event reached the control plane's store,
	// chained by hash; what a breach response asks for, in one report.
	if err := cp.drain(); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	evMu.Lock()
	n := len(events)
	evMu.Unlock()
	if err := cp.store.Checkpoint(ctx); err != nil {
		return err
	}
	rep, err := store.Verify(ctx, cp.store, cp.pub)
	if err != nil {
		return err
	}
	if !rep.OK() || rep.Entries != uint64(n) {
		return fmt.Errorf("demo: audit store holds %d events (%d recorded) with %d problems", rep.Entries, n, len(rep.Problems))
	}
	say("  %d access events in the audit store, hash chain and signed checkpoint verified; the report", n)
	say("  a breach response starts from ('medgate audit report --since 72h'):")
	entries, err := cp.store.Query(ctx, store.Filter{Since: start.Add(-time.Minute)})
	if err != nil {
		return err
	}
	var brief []store.Entry
	for _, e := range entries {
		var k struct{ Kind, Direction string }
		json.Unmarshal(e.Record, &k)
		if k.Kind == "admission" && k.Direction == "inbound" || k.Kind == "object" {
			brief = append(brief, e)
		}
	}
	if err := store.WriteReport(stdout, "table", brief); err != nil {
		return err
	}
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

func mustPatterns(s string) identity.Patterns {
	ps, err := identity.ParsePatterns(s)
	if err != nil {
		panic(err)
	}
	return ps
}

// mllpReceiver is an HL7 interface (the demo's US EHR, and the tests'
// receiver): it keeps every message it receives and acknowledges each with
// MSA|AA and the message's control ID (MSH-10).
func mllpReceiver() (net.Listener, func() []string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	var mu sync.Mutex
	var got []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := hl7.NewReader(c, 0)
				for {
					msg, err := r.ReadFrame()
					if err != nil {
						return
					}
					text := string(msg)
					mu.Lock()
					got = append(got, text)
					mu.Unlock()
					ctrl := ""
					if f := strings.Split(strings.SplitN(text, "\r", 2)[0], "|"); len(f) > 9 {
						ctrl = f[9]
					}
					hl7.WriteFrame(c, []byte("MSH|^~\\&|EHR|US-CLINIC|RIS|EU-HOSPITAL|20261122091501||ACK|A"+ctrl+"|P|2.5\rMSA|AA|"+ctrl+"\r"))
				}
			}()
		}
	}()
	return ln, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), got...) }, nil
}

// sendMLLP sends one HL7 message framed for MLLP and returns the answer.
func sendMLLP(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := hl7.WriteFrame(c, []byte(msg)); err != nil {
		return "", err
	}
	ack, err := hl7.NewReader(c, 0).ReadFrame()
	if err != nil {
		return "", err
	}
	return string(ack), nil
}

// segment returns the first segment of an HL7 message with that name.
func segment(msg, name string) string {
	for _, s := range strings.Split(msg, "\r") {
		if strings.HasPrefix(s, name+"|") {
			return s
		}
	}
	return ""
}
