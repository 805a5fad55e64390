package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/medgate/medgate/crypto/keys"
	"github.com/medgate/medgate/identity/devca"
	"github.com/medgate/medgate/posture"
)

// setup makes a work directory named after prefix, a sink and the PKI
// every configuration of a run shares; done removes them.
func setup(prefix string) (work string, s *sink, pki *benchPKI, done func(), err error) {
	if work, err = os.MkdirTemp("", prefix); err != nil {
		return "", nil, nil, nil, err
	}
	if s, err = startSink(); err != nil {
		os.RemoveAll(work)
		return "", nil, nil, nil, err
	}
	if pki, err = newBenchPKI(work); err != nil {
		s.Close()
		os.RemoveAll(work)
		return "", nil, nil, nil, err
	}
	return work, s, pki, func() { s.Close(); os.RemoveAll(work) }, nil
}

// benchPKI holds ECDSA P-256 SVIDs for the two ends of every TLS pair, so
// all TLS configurations use the same certificates.
type benchPKI struct {
	client, server, bundle string // directories / bundle file
	keyring                string // shared envelope keyring file
	policy, token          string // a policy with a posture profile, and the client's token
}

// benchSites puts every bench identity in one jurisdiction whose records
// stay in it; the policies below add their access rules to it.
const benchSites = `apiVersion: medgate.io/v1
kind: Jurisdictions
metadata: {name: bench}
spec:
  codes: [EU]
  bindings: [{id: "spiffe://bench.example/*", jurisdiction: EU}]
---
apiVersion: medgate.io/v1
kind: ResidencyRules
metadata: {name: bench}
spec:
  rules: [{dataClass: records, from: EU, to: EU, action: allow}]
---
`

const benchPolicy = benchSites + `apiVersion: medgate.io/v1
kind: PostureProfile
metadata: {name: workstation}
spec:
  issuers: [{name: bench-mdm, jwks: '%s'}]
  minOSVersion: {debian: "12"}
  requireDiskEncryption: true
  maxPatchAge: 30d
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: default}
spec:
  dataClass: records
  allow: ["spiffe://bench.example/client"]
  postureProfile: workstation
`

// writePosture writes the policy and a one-hour token for the client.
func (p *benchPKI) writePosture(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	signer, err := posture.NewSigner(key, "bench-1")
	if err != nil {
		return err
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{signer.PublicJWK()}})
	p.policy = filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(p.policy, []byte(fmt.Sprintf(benchPolicy, jwks)), 0o600); err != nil {
		return err
	}
	leafPEM, err := os.ReadFile(filepath.Join(p.client, devca.SVIDFile))
	if err != nil {
		return err
	}
	block, _ := pem.Decode(leafPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	yes, now := true, time.Now()
	token, err := posture.Issue(signer, posture.Claims{
		Issuer: "bench-mdm", Subject: spiffeid.RequireFromString("spiffe://bench.example/client"), DeviceID: "bench-client",
		OS: &posture.OSInfo{Name: "debian", Version: "12"}, DiskEncrypted: &yes, LastPatch: now.Add(-time.Hour),
		IssuedAt: now, Expiry: now.Add(time.Hour), SPKIHash: posture.SPKIHash(leaf),
	})
	if err != nil {
		return err
	}
	p.token = filepath.Join(dir, "token.jws")
	return os.WriteFile(p.token, token, 0o600)
}

func newBenchPKI(dir string) (*benchPKI, error) {
	ca, err := devca.Init(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString("bench.example"))
	if err != nil {
		return nil, err
	}
	p := &benchPKI{client: filepath.Join(dir, "client"), server: filepath.Join(dir, "server"), bundle: filepath.Join(dir, "ca", devca.CACertFile),
		keyring: filepath.Join(dir, "keys", "keyring.json")}
	if _, err := keys.InitFile(p.keyring); err != nil {
		return nil, err
	}
	for id, out := range map[string]string{"spiffe://bench.example/client": p.client, "spiffe://bench.example/server": p.server} {
		svid, err := ca.Issue(spiffeid.RequireFromString(id), 24*time.Hour)
		if err != nil {
			return nil, err
		}
		if err := ca.WriteSVID(svid, out); err != nil {
			return nil, err
		}
	}
	return p, p.writePosture(dir)
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// pairPorts returns free loopback addresses for the far and near proxy of
// a pair.
func pairPorts() (far, near string, err error) {
	if far, err = freePort(); err != nil {
		return "", "", err
	}
	near, err = freePort()
	return far, near, err
}

func startProc(ctx context.Context, logPath, bin string, env []string, args ...string) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { cmd.Wait(); logf.Close() }()
	return cmd, nil
}

func stopAll(cmds ...*exec.Cmd) func() {
	return func() {
		for _, c := range cmds {
			if c != nil && c.Process != nil {
				c.Process.Kill()
			}
		}
	}
}

// startRelayPair runs two copies of this program as relays: plain TCP, or
// TLS 1.3 with mutual authentication when pki is set. With stats, each
// serves its Go runtime's memory figures on a loopback port.
func startRelayPair(ctx context.Context, name, sink string, pki *benchPKI, work string, stats bool) (*config, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	far, near, err := pairPorts()
	if err != nil {
		return nil, err
	}
	farArgs := []string{"relay", "-listen", far, "-to", sink}
	nearArgs := []string{"relay", "-listen", near, "-to", far}
	if pki != nil {
		farArgs = append(farArgs, "-tls-server", pki.server, "-bundle", pki.bundle)
		nearArgs = append(nearArgs, "-tls-client", pki.client, "-bundle", pki.bundle)
	}
	var statsURLs []string
	if stats {
		a, b, err := pairPorts()
		if err != nil {
			return nil, err
		}
		farArgs, nearArgs = append(farArgs, "-stats", a), append(nearArgs, "-stats", b)
		statsURLs = []string{"http://" + a + "/", "http://" + b + "/"}
	}
	a, err := startProc(ctx, filepath.Join(work, name+"-far.log"), self, nil, farArgs...)
	if err != nil {
		return nil, err
	}
	b, err := startProc(ctx, filepath.Join(work, name+"-near.log"), self, nil, nearArgs...)
	if err != nil {
		stopAll(a)()
		return nil, err
	}
	return &config{name: name, entry: near, pids: []int{a.Process.Pid, b.Process.Pid}, stats: statsURLs, stop: stopAll(a, b)}, nil
}

// runRelay is the baseline relay: accept, dial, copy both ways with
// io.Copy, as a minimal Go proxy would.
func runRelay(args []string) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	listen := fs.String("listen", "", "")
	to := fs.String("to", "", "")
	tlsServer := fs.String("tls-server", "", "SVID directory: accept TLS")
	tlsClient := fs.String("tls-client", "", "SVID directory: dial TLS")
	bundle := fs.String("bundle", "", "CA file")
	stats := fs.String("stats", "", "serve Go runtime memory figures on this address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *stats != "" {
		if err := serveGoStats(*stats); err != nil {
			return err
		}
	}
	var serverCfg, clientCfg *tls.Config
	if *tlsServer != "" || *tlsClient != "" {
		caPEM, err := os.ReadFile(*bundle)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		load := func(dir string) (tls.Certificate, error) {
			return tls.LoadX509KeyPair(filepath.Join(dir, devca.SVIDFile), filepath.Join(dir, devca.KeyFile))
		}
		if *tlsServer != "" {
			cert, err := load(*tlsServer)
			if err != nil {
				return err
			}
			serverCfg = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
		}
		if *tlsClient != "" {
			cert, err := load(*tlsClient)
			if err != nil {
				return err
			}
			// SVIDs carry no DNS names; verify the chain only.
			clientCfg = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
				VerifyConnection: func(cs tls.ConnectionState) error {
					opts := x509.VerifyOptions{Roots: pool, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
					if len(cs.PeerCertificates) == 0 {
						return errors.New("no server certificate")
					}
					_, err := cs.PeerCertificates[0].Verify(opts)
					return err
				}}
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if serverCfg != nil {
		ln = tls.NewListener(ln, serverCfg)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			var up net.Conn
			var err error
			if clientCfg != nil {
				up, err = tls.Dial("tcp", *to, clientCfg)
			} else {
				up, err = net.Dial("tcp", *to)
			}
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{})
			go func() {
				io.Copy(up, c)
				if cw, ok := up.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
				close(done)
			}()
			io.Copy(c, up)
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			<-done
		}()
	}
}

// startMedgatePair runs an outbound and an inbound medgate sidecar.
func startMedgatePair(ctx context.Context, bin, name, sink string, pki *benchPKI, work string, inExtra, outExtra []string) (*config, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("medgate binary: %w (run make build)", err)
	}
	inAddr, outAddr, err := pairPorts()
	if err != nil {
		return nil, err
	}
	common := []string{"MEDGATE_ADMIN_ADDR=off", "MEDGATE_LOG_FORMAT=json", "MEDGATE_TRUST_BUNDLE=" + pki.bundle}
	ids := func(dir string) []string {
		return []string{"MEDGATE_SVID_CERT=" + filepath.Join(dir, devca.SVIDFile), "MEDGATE_SVID_KEY=" + filepath.Join(dir, devca.KeyFile)}
	}
	inEnv := append(append(append([]string{}, common...), ids(pki.server)...),
		"MEDGATE_INBOUND_LISTEN="+inAddr, "MEDGATE_INBOUND_UPSTREAM="+sink)
	outEnv := append(append(append([]string{}, common...), ids(pki.client)...),
		"MEDGATE_OUTBOUND_LISTEN="+outAddr, "MEDGATE_OUTBOUND_PEER="+inAddr, "MEDGATE_OUTBOUND_PEER_ID=spiffe://bench.example/server")
	in, err := startProc(ctx, filepath.Join(work, name+"-in.log"), bin, append(inEnv, inExtra...), "sidecar")
	if err != nil {
		return nil, err
	}
	out, err := startProc(ctx, filepath.Join(work, name+"-out.log"), bin, append(outEnv, outExtra...), "sidecar")
	if err != nil {
		stopAll(in)()
		return nil, err
	}
	return &config{name: name, entry: outAddr, pids: []int{in.Process.Pid, out.Process.Pid}, stop: stopAll(in, out)}, nil
}
