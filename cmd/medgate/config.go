package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"

	"github.com/medgate/medgate/controlplane/spool"
	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/proxy"
)

// envPrefix is the prefix of every setting's variable.
const envPrefix = "MEDGATE_"

// SVIDSettings says where a process's X.509-SVID comes from. The sidecar,
// the control plane and the policy commands read the same variables.
type SVIDSettings struct {
	SVIDCert        string   `env:"SVID_CERT" help:"PEM file with the X.509-SVID (leaf first); reloaded when it changes"`
	SVIDKey         string   `env:"SVID_KEY" help:"PEM file with the SVID's PKCS#8 private key"`
	TrustBundle     []string `env:"TRUST_BUNDLE" envSeparator:"," help:"PEM trust bundle files, comma-separated, one per trust domain (federation); TD=PATH names a bundle's trust domain"`
	WorkloadAPIAddr string   `env:"WORKLOAD_API_ADDR" help:"SPIFFE Workload API address, unix:///path (falls back to SPIFFE_ENDPOINT_SOCKET); used instead of the PEM files"`
}

// sidecarEnv is the sidecar's bootstrap configuration. Each field's help
// tag is what 'medgate sidecar --help' prints for it.
type sidecarEnv struct {
	SVIDSettings

	InboundRoute         string `env:"INBOUND_ROUTE" envDefault:"default" help:"name of the inbound route remote sidecars ask for"`
	InboundListen        string `env:"INBOUND_LISTEN" help:"host:port for tunnels from remote sidecars"`
	InboundUpstream      string `env:"INBOUND_UPSTREAM" help:"host:port of the local app behind the inbound route"`
	InboundAllow         string `env:"INBOUND_ALLOW" help:"SPIFFE IDs admitted when no policy is configured: spiffe://td/path, spiffe://td/* or spiffe://td/path/*, comma-separated"`
	InboundProxyProtocol bool   `env:"INBOUND_PROXY_PROTOCOL" envDefault:"false" help:"send a PROXY protocol v2 header with the peer's SPIFFE ID (TLV 0xE0) to the app"`
	InboundProtocol      string `env:"INBOUND_PROTOCOL" envDefault:"tcp" help:"what the app behind the inbound route speaks: tcp (opaque), hl7 (MLLP), dicom (DIMSE) or http (FHIR); only a protocol with a codec can carry data that must be de-identified"`

	OutboundListen    string `env:"OUTBOUND_LISTEN" help:"loopback host:port the local app connects to"`
	OutboundPeer      string `env:"OUTBOUND_PEER" help:"host:port of the remote sidecar"`
	OutboundPeerID    string `env:"OUTBOUND_PEER_ID" help:"SPIFFE ID the remote sidecar must present"`
	OutboundRoute     string `env:"OUTBOUND_ROUTE" envDefault:"default" help:"inbound route to ask for at the remote sidecar"`
	OutboundProtocol  string `env:"OUTBOUND_PROTOCOL" envDefault:"tcp" help:"what the local app speaks on the outbound route: tcp, hl7, dicom or http"`
	OutboundTransport string `env:"OUTBOUND_TRANSPORT" envDefault:"tcp" help:"tcp, quic (one QUIC connection per remote sidecar, a stream per proxied connection) or auto (QUIC, falling back to TCP while UDP is blocked)"`
	InboundQUIC       string `env:"INBOUND_QUIC" envDefault:"on" help:"on: inbound listeners also accept QUIC on UDP at the same port number; off: TCP only"`

	Keyring        string `env:"KEYRING" help:"envelope keyring for the inner encryption layer: a keyring file ('medgate keys init'), or pkcs11:module=PATH;token=LABEL"`
	KeyringPIN     string `env:"KEYRING_PIN" help:"PIN of the PKCS#11 token (prefer MEDGATE_KEYRING_PIN_FILE)"`
	KeyringPINFile string `env:"KEYRING_PIN_FILE" help:"file holding the PIN of the PKCS#11 token"`
	InnerLayer     string `env:"INNER_LAYER" envDefault:"on" help:"on: seal both directions of the routes set by variables under data keys from MEDGATE_KEYRING; off: TLS only, for peers in the same site"`

	Config     string `env:"CONFIG" help:"YAML file with more inbound and outbound routes (same fields)"`
	PolicyFile string `env:"POLICY_FILE" help:"local policy file (YAML, medgate.io/v1 documents): access, posture profiles, jurisdictions, residency; replaces MEDGATE_INBOUND_ALLOW; reloaded when it changes"`
	ControlPlaneClient
	StateDir         string        `env:"STATE_DIR" envDefault:"/var/lib/medgate" help:"where the sidecar keeps the last good policy from the control plane and its encrypted access event spool"`
	PolicyMaxAge     time.Duration `env:"POLICY_MAX_AGE" envDefault:"24h" help:"how long the last good policy stays in force while the control plane cannot be reached; then the sidecar refuses traffic until it is back"`
	EventSpoolMB     int           `env:"EVENT_SPOOL_MB" envDefault:"256" help:"bound on the encrypted spool of access events not yet acknowledged by the control plane, in MiB"`
	EventSpoolFull   string        `env:"EVENT_SPOOL_FULL" envDefault:"fail-closed" help:"when the spool is full: fail-closed refuses new sessions until events drain; drop-oldest loses the oldest events and counts them in medgate_events_lost_total (a route in MEDGATE_CONFIG may set its own: eventSpoolFull)"`
	PostureTokenFile string        `env:"POSTURE_TOKEN_FILE" help:"file holding this device's posture token (from an MDM/EDR issuer or 'medgate posture issue --refresh'); sent to peers and refreshed in band"`
	EventLog         string        `env:"EVENT_LOG" help:"file that access events are appended to as JSON lines"`

	AdminAddr string `env:"ADMIN_ADDR" envDefault:"127.0.0.1:9901" help:"address of /healthz, /readyz and /metrics; off turns it off"`
	LogLevel  string `env:"LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error"`
	LogFormat string `env:"LOG_FORMAT" help:"text or json; default text with colour on a terminal, json otherwise"`

	HandshakeTimeout     time.Duration `env:"HANDSHAKE_TIMEOUT" envDefault:"5s" help:"bound on a tunnel's TLS handshake and session setup"`
	ConnectTimeout       time.Duration `env:"CONNECT_TIMEOUT" envDefault:"5s" help:"bound on dialing a remote sidecar or the local app"`
	IdleTimeout          time.Duration `env:"IDLE_TIMEOUT" envDefault:"15m" help:"close a session after this long with no bytes either way"`
	DrainTimeout         time.Duration `env:"DRAIN_TIMEOUT" envDefault:"30s" help:"on SIGTERM, how long live sessions may finish before they are closed"`
	MaxSessions          int           `env:"MAX_SESSIONS" envDefault:"4096" help:"most proxied connections at once, all routes together"`
	MaxPendingHandshakes int           `env:"MAX_PENDING_HANDSHAKES" envDefault:"256" help:"most tunnel connections not yet admitted; a new one evicts the oldest"`
	ReloadInterval       time.Duration `env:"RELOAD_INTERVAL" envDefault:"2s" help:"how often the SVID files and the policy file are checked for changes (SIGHUP reloads the policy at once)"`
}

// routesFile is the shape of MEDGATE_CONFIG.
type routesFile struct {
	Inbound []struct {
		Name          string   `yaml:"name"`
		Listen        string   `yaml:"listen"`
		Upstream      string   `yaml:"upstream"`
		Allow         []string `yaml:"allow"`
		ProxyProtocol bool     `yaml:"proxyProtocol"`
		InnerLayer    *bool    `yaml:"innerLayer"`
		Protocol      string   `yaml:"protocol"`
		SpoolFull     string   `yaml:"eventSpoolFull"`
	} `yaml:"inbound"`
	Outbound []struct {
		Name        string `yaml:"name"`
		Listen      string `yaml:"listen"`
		Peer        string `yaml:"peer"`
		PeerID      string `yaml:"peerID"`
		RemoteRoute string `yaml:"remoteRoute"`
		InnerLayer  *bool  `yaml:"innerLayer"`
		Transport   string `yaml:"transport"`
		Protocol    string `yaml:"protocol"`
		SpoolFull   string `yaml:"eventSpoolFull"`
	} `yaml:"outbound"`
}

// sidecarConfig is the checked configuration.
type sidecarConfig struct {
	env   sidecarEnv
	proxy proxy.Config
	// spoolModes holds the routes' own eventSpoolFull settings.
	spoolModes map[string]spool.FullMode
	// controlPlaneID admits the control plane, when there is one.
	controlPlaneID identity.Patterns
	// workloadAPI is set when identity comes from the Workload API.
	workloadAPI string
}

// loadSidecarConfig reads and checks every setting, reporting all problems
// at once, each naming its variable.
func loadSidecarConfig(environ map[string]string) (*sidecarConfig, error) {
	e, err := env.ParseAsWithOptions[sidecarEnv](env.Options{Environment: environ, Prefix: envPrefix})
	errs, unparsed := parseErrors(err, sidecarEnv{})
	bad := func(name, format string, args ...any) {
		if unparsed[name] {
			return // already reported as unparseable
		}
		errs = append(errs, fmt.Errorf("%s%s: %s", envPrefix, name, fmt.Sprintf(format, args...)))
	}
	cfg := &sidecarConfig{env: e}

	cfg.workloadAPI = e.SVIDSettings.check(environ, bad)
	cfg.controlPlaneID = e.ControlPlaneClient.check(bad)
	policyElsewhere := e.PolicyFile != "" || e.ControlPlane != ""
	if e.ControlPlane != "" {
		if e.PolicyFile != "" {
			bad("POLICY_FILE", "set together with MEDGATE_CONTROL_PLANE; policy comes from one place")
		}
		if e.Keyring == "" {
			bad("KEYRING", "required with MEDGATE_CONTROL_PLANE: access events are spooled encrypted under it")
		}
		if e.StateDir == "" {
			bad("STATE_DIR", "required with MEDGATE_CONTROL_PLANE")
		}
		if e.PolicyMaxAge <= 0 {
			bad("POLICY_MAX_AGE", "must be positive, got %s", e.PolicyMaxAge)
		}
		if e.EventSpoolMB < 1 {
			bad("EVENT_SPOOL_MB", "must be at least 1, got %d", e.EventSpoolMB)
		}
	}
	if _, err := parseFullMode(e.EventSpoolFull); err != nil {
		bad("EVENT_SPOOL_FULL", "%v", err)
	}

	// Routes from variables.
	if e.InboundListen != "" || e.InboundUpstream != "" || e.InboundAllow != "" {
		r := proxy.InboundRoute{Name: e.InboundRoute, Listen: e.InboundListen, Upstream: e.InboundUpstream, ProxyProtocol: e.InboundProxyProtocol, DisableInnerLayer: e.InnerLayer == "off", Protocol: e.InboundProtocol}
		if err := validProtocol(e.InboundProtocol); err != nil {
			bad("INBOUND_PROTOCOL", "%v", err)
		}
		if e.InboundListen == "" {
			bad("INBOUND_LISTEN", "required for the inbound route")
		} else if err := hostPort(e.InboundListen); err != nil {
			bad("INBOUND_LISTEN", "%v", err)
		}
		if e.InboundUpstream == "" {
			bad("INBOUND_UPSTREAM", "required for the inbound route")
		} else if err := hostPort(e.InboundUpstream); err != nil {
			bad("INBOUND_UPSTREAM", "%v", err)
		}
		ps, err := identity.ParsePatterns(e.InboundAllow)
		if err != nil {
			bad("INBOUND_ALLOW", "%v", err)
		}
		switch {
		case len(ps) == 0 && !policyElsewhere && err == nil:
			bad("INBOUND_ALLOW", "empty: without a policy file the inbound route would admit nobody")
		case e.InboundAllow != "" && policyElsewhere:
			bad("INBOUND_ALLOW", "set together with MEDGATE_POLICY_FILE, which decides admission; list the IDs in the route's AccessPolicy instead")
		}
		r.Allow = ps
		cfg.proxy.Inbound = append(cfg.proxy.Inbound, r)
	}
	if e.OutboundListen != "" || e.OutboundPeer != "" || e.OutboundPeerID != "" {
		r := proxy.OutboundRoute{Name: e.OutboundRoute, Listen: e.OutboundListen, Peer: e.OutboundPeer, RemoteRoute: e.OutboundRoute, DisableInnerLayer: e.InnerLayer == "off", Transport: e.OutboundTransport, Protocol: e.OutboundProtocol}
		if err := validProtocol(e.OutboundProtocol); err != nil {
			bad("OUTBOUND_PROTOCOL", "%v", err)
		}
		if e.OutboundListen == "" {
			bad("OUTBOUND_LISTEN", "required for the outbound route")
		} else if err := hostPort(e.OutboundListen); err != nil {
			bad("OUTBOUND_LISTEN", "%v", err)
		}
		if e.OutboundPeer == "" {
			bad("OUTBOUND_PEER", "required for the outbound route")
		} else if err := hostPort(e.OutboundPeer); err != nil {
			bad("OUTBOUND_PEER", "%v", err)
		}
		id, err := spiffeid.FromString(e.OutboundPeerID)
		if err != nil {
			bad("OUTBOUND_PEER_ID", "%q: %v", e.OutboundPeerID, err)
		}
		r.PeerID = id
		cfg.proxy.Outbound = append(cfg.proxy.Outbound, r)
	}
	if e.Config != "" {
		in, out, modes, err := loadRoutesFile(e.Config, policyElsewhere)
		cfg.spoolModes = modes
		if err != nil {
			bad("CONFIG", "%v", err)
		}
		cfg.proxy.Inbound = append(cfg.proxy.Inbound, in...)
		cfg.proxy.Outbound = append(cfg.proxy.Outbound, out...)
	}
	if len(cfg.proxy.Inbound) == 0 && len(cfg.proxy.Outbound) == 0 {
		errs = append(errs, errors.New("no routes: set MEDGATE_INBOUND_* or MEDGATE_OUTBOUND_* variables, or MEDGATE_CONFIG"))
	}
	if e.PolicyFile != "" {
		if err := readable(e.PolicyFile); err != nil {
			bad("POLICY_FILE", "%v", err)
		}
	}
	if !validTransport(e.OutboundTransport) || e.OutboundTransport == "" {
		bad("OUTBOUND_TRANSPORT", "%q: want tcp, quic or auto", e.OutboundTransport)
	}
	if e.InboundQUIC != "on" && e.InboundQUIC != "off" {
		bad("INBOUND_QUIC", "%q: want on or off", e.InboundQUIC)
	}
	if e.InnerLayer != "on" && e.InnerLayer != "off" {
		bad("INNER_LAYER", "%q: want on or off", e.InnerLayer)
	}
	needKeys := false
	for _, r := range cfg.proxy.Inbound {
		needKeys = needKeys || !r.DisableInnerLayer
	}
	for _, r := range cfg.proxy.Outbound {
		needKeys = needKeys || !r.DisableInnerLayer
	}
	if needKeys && e.Keyring == "" {
		bad("KEYRING", "required: the inner encryption layer is on (create one with 'medgate keys init', or set MEDGATE_INNER_LAYER=off where both ends sit in one site)")
	}
	if e.KeyringPIN != "" && e.KeyringPINFile != "" {
		bad("KEYRING_PIN", "set together with MEDGATE_KEYRING_PIN_FILE; choose one")
	}
	if e.PostureTokenFile != "" && len(cfg.proxy.Outbound) == 0 {
		bad("POSTURE_TOKEN_FILE", "set without an outbound route; only outbound routes send posture")
	}
	if e.AdminAddr != "off" {
		if err := hostPort(e.AdminAddr); err != nil {
			bad("ADMIN_ADDR", "%v", err)
		}
	}
	if _, err := parseLevel(e.LogLevel); err != nil {
		bad("LOG_LEVEL", "%v", err)
	}
	if e.LogFormat != "" && e.LogFormat != "text" && e.LogFormat != "json" {
		bad("LOG_FORMAT", "%q: want text or json", e.LogFormat)
	}
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			bad(name, "must be positive, got %s", d)
		}
	}
	positive("HANDSHAKE_TIMEOUT", e.HandshakeTimeout)
	positive("CONNECT_TIMEOUT", e.ConnectTimeout)
	positive("IDLE_TIMEOUT", e.IdleTimeout)
	positive("DRAIN_TIMEOUT", e.DrainTimeout)
	positive("RELOAD_INTERVAL", e.ReloadInterval)
	if e.MaxSessions <= 0 {
		bad("MAX_SESSIONS", "must be positive, got %d", e.MaxSessions)
	}
	if e.MaxPendingHandshakes <= 0 {
		bad("MAX_PENDING_HANDSHAKES", "must be positive, got %d", e.MaxPendingHandshakes)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("configuration:\n%w", joinLines(errs))
	}
	cfg.proxy.HandshakeTimeout = e.HandshakeTimeout
	cfg.proxy.ConnectTimeout = e.ConnectTimeout
	cfg.proxy.IdleTimeout = e.IdleTimeout
	cfg.proxy.DrainTimeout = e.DrainTimeout
	cfg.proxy.MaxSessions = e.MaxSessions
	cfg.proxy.MaxPendingHandshakes = e.MaxPendingHandshakes
	cfg.proxy.DisableQUIC = e.InboundQUIC == "off"
	return cfg, nil
}

func loadRoutesFile(path string, havePolicy bool) ([]proxy.InboundRoute, []proxy.OutboundRoute, map[string]spool.FullMode, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, nil, err
	}
	return parseRoutes(path, data, havePolicy)
}

// parseRoutes reads a routes file's contents; path names it in errors.
// The third result holds the routes that set eventSpoolFull, by
// spoolKey.
func parseRoutes(path string, data []byte, havePolicy bool) ([]proxy.InboundRoute, []proxy.OutboundRoute, map[string]spool.FullMode, error) {
	var rf routesFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, nil, fmt.Errorf("%s: %v", path, err)
	}
	var errs []error
	modes := map[string]spool.FullMode{}
	mode := func(at, dir, name, v string) {
		if v == "" {
			return
		}
		m, err := parseFullMode(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.eventSpoolFull: %v", at, err))
			return
		}
		modes[spoolKey(dir, name)] = m
	}
	var in []proxy.InboundRoute
	var out []proxy.OutboundRoute
	for i, r := range rf.Inbound {
		at := fmt.Sprintf("%s: inbound[%d]", path, i)
		if r.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: required", at))
		}
		if err := hostPort(r.Listen); err != nil {
			errs = append(errs, fmt.Errorf("%s.listen: %v", at, err))
		}
		if err := hostPort(r.Upstream); err != nil {
			errs = append(errs, fmt.Errorf("%s.upstream: %v", at, err))
		}
		ps, err := identity.ParsePatterns(strings.Join(r.Allow, ","))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.allow: %v", at, err))
		} else if len(ps) == 0 && !havePolicy {
			errs = append(errs, fmt.Errorf("%s.allow: empty: without a policy file the route would admit nobody", at))
		}
		if err := validProtocol(r.Protocol); err != nil {
			errs = append(errs, fmt.Errorf("%s.protocol: %v", at, err))
		}
		mode(at, "inbound", r.Name, r.SpoolFull)
		in = append(in, proxy.InboundRoute{Name: r.Name, Listen: r.Listen, Upstream: r.Upstream, Allow: ps, ProxyProtocol: r.ProxyProtocol, DisableInnerLayer: r.InnerLayer != nil && !*r.InnerLayer, Protocol: r.Protocol})
	}
	for i, r := range rf.Outbound {
		at := fmt.Sprintf("%s: outbound[%d]", path, i)
		if r.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: required", at))
		}
		if err := hostPort(r.Listen); err != nil {
			errs = append(errs, fmt.Errorf("%s.listen: %v", at, err))
		}
		if err := hostPort(r.Peer); err != nil {
			errs = append(errs, fmt.Errorf("%s.peer: %v", at, err))
		}
		id, err := spiffeid.FromString(r.PeerID)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.peerID: %q: %v", at, r.PeerID, err))
		}
		if !validTransport(r.Transport) {
			errs = append(errs, fmt.Errorf("%s.transport: %q: want tcp, quic or auto", at, r.Transport))
		}
		if err := validProtocol(r.Protocol); err != nil {
			errs = append(errs, fmt.Errorf("%s.protocol: %v", at, err))
		}
		mode(at, "outbound", r.Name, r.SpoolFull)
		out = append(out, proxy.OutboundRoute{Name: r.Name, Listen: r.Listen, Peer: r.Peer, PeerID: id, RemoteRoute: r.RemoteRoute, DisableInnerLayer: r.InnerLayer != nil && !*r.InnerLayer, Transport: r.Transport, Protocol: r.Protocol})
	}
	return in, out, modes, errors.Join(errs...)
}

// spoolKey names a route in a sidecar's spool modes.
func spoolKey(direction, route string) string { return direction + "/" + route }

func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

func hostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q: want host:port", s)
	}
	_ = host
	if port == "" {
		return fmt.Errorf("%q: no port", s)
	}
	return nil
}

// parseErrors turns env's errors into one error per variable, named by
// the variable, and returns the set of variables (without prefix) that
// could not be parsed.
func parseErrors(err error, v any) ([]error, map[string]bool) {
	unparsed := map[string]bool{}
	if err == nil {
		return nil, unparsed
	}
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return []error{err}, unparsed
	}
	t := reflect.TypeOf(v)
	var errs []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := t.FieldByName(pe.Name); ok {
				name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
				unparsed[name] = true
				errs = append(errs, fmt.Errorf("%s%s: %v", envPrefix, name, pe.Err))
				continue
			}
		}
		errs = append(errs, e)
	}
	return errs, unparsed
}

// joinLines joins errors one per line, indented.
func joinLines(errs []error) error {
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = "  " + e.Error()
	}
	return errors.New(strings.Join(lines, "\n"))
}

// envHelp lists the variables of a config struct with their defaults and
// help tags.
func envHelp(w io.Writer, v any) {
	for _, f := range envFields(reflect.TypeOf(v)) {
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		if name == "" {
			continue
		}
		name = envPrefix + name
		line := fmt.Sprintf("  %-32s %s", name, f.Tag.Get("help"))
		if d := f.Tag.Get("envDefault"); d != "" {
			line += fmt.Sprintf(" (default %s)", d)
		}
		fmt.Fprintln(w, line)
	}
}

func validTransport(t string) bool {
	return t == "" || t == proxy.TransportTCP || t == proxy.TransportQUIC || t == proxy.TransportAuto
}

func validProtocol(p string) error {
	if p == "" || p == "tcp" || codecs[p] != nil {
		return nil
	}
	names := []string{"tcp"}
	for n := range codecs {
		names = append(names, n)
	}
	slices.Sort(names)
	return fmt.Errorf("protocol %q: want one of %s", p, strings.Join(names, ", "))
}

// check reports what is wrong with the identity settings through bad and
// returns the Workload API address to use, or "" for the PEM files.
func (e SVIDSettings) check(environ map[string]string, bad func(name, format string, args ...any)) string {
	workloadAPI := e.WorkloadAPIAddr
	if workloadAPI == "" && e.SVIDCert == "" && e.SVIDKey == "" {
		workloadAPI = environ["SPIFFE_ENDPOINT_SOCKET"]
	}
	switch {
	case workloadAPI != "":
		if e.SVIDCert != "" || e.SVIDKey != "" {
			bad("WORKLOAD_API_ADDR", "set together with SVID_CERT/SVID_KEY; choose one source of identity")
		}
		if !strings.HasPrefix(workloadAPI, "unix:///") && !strings.HasPrefix(workloadAPI, "tcp://") {
			bad("WORKLOAD_API_ADDR", "%q is not an absolute unix:///path or tcp://host:port address", workloadAPI)
		}
	default:
		if e.SVIDCert == "" {
			bad("SVID_CERT", "required (or set MEDGATE_WORKLOAD_API_ADDR)")
		} else if err := readable(e.SVIDCert); err != nil {
			bad("SVID_CERT", "%v", err)
		}
		if e.SVIDKey == "" {
			bad("SVID_KEY", "required with MEDGATE_SVID_CERT")
		} else if err := readable(e.SVIDKey); err != nil {
			bad("SVID_KEY", "%v", err)
		}
		if len(e.TrustBundle) == 0 {
			bad("TRUST_BUNDLE", "required with MEDGATE_SVID_CERT: the CA certificates peers are verified against")
		}
		for _, b := range e.TrustBundle {
			_, path, _ := strings.Cut(b, "=")
			if !strings.Contains(b, "=") {
				path = b
			}
			if err := readable(path); err != nil {
				bad("TRUST_BUNDLE", "%v", err)
			}
		}
	}
	return workloadAPI
}

// envFields lists a settings struct's fields, those of embedded structs in
// place.
func envFields(t reflect.Type) []reflect.StructField {
	var out []reflect.StructField
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			out = append(out, envFields(f.Type)...)
			continue
		}
		out = append(out, f)
	}
	return out
}
