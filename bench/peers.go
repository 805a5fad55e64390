package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/medgate/medgate/identity/devca"
)

// The TLS proxies hospitals already run, as pairs with the same ECDSA
// P-256 certificates as medgate, TLS 1.3 and client certificates required
// and verified on the far side. Each is skipped with a note when not
// installed. nginx's near side does not verify the far side's certificate:
// nginx insists on matching a host name, and SPIFFE SVIDs carry none.
//
// Session resumption is off on both sides of every pair unless resume is
// set: medgate verifies both certificates at every connection, and by
// default all three peers resume their previous session with a ticket,
// which skips the certificates, their signatures and their verification.
// The Go TLS pair keeps no session cache, so it never resumes.

// pemFiles writes the combined files the peers want: certificate and key
// together (HAProxy), and the CA.
func (p *benchPKI) pemFiles(dir string) (clientPEM, serverPEM string, err error) {
	join := func(name, svidDir string) (string, error) {
		cert, err := os.ReadFile(filepath.Join(svidDir, devca.SVIDFile))
		if err != nil {
			return "", err
		}
		key, err := os.ReadFile(filepath.Join(svidDir, devca.KeyFile))
		if err != nil {
			return "", err
		}
		out := filepath.Join(dir, name)
		return out, os.WriteFile(out, append(cert, key...), 0o600)
	}
	if clientPEM, err = join("client-combined.pem", p.client); err != nil {
		return
	}
	serverPEM, err = join("server-combined.pem", p.server)
	return
}

func startPeerPair(ctx context.Context, name, sink string, pki *benchPKI, work string, resume bool) (*config, error) {
	bin := map[string]string{"stunnel-pair": "stunnel", "haproxy-pair": "haproxy", "nginx-pair": "nginx"}[name]
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%s not installed (apt-get install stunnel4 haproxy nginx-light libnginx-mod-stream)", bin)
	}
	dir := filepath.Join(work, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	far, near, err := pairPorts()
	if err != nil {
		return nil, err
	}
	clientPEM, serverPEM, err := pki.pemFiles(dir)
	if err != nil {
		return nil, err
	}
	cert := func(d string) string { return filepath.Join(d, devca.SVIDFile) }
	key := func(d string) string { return filepath.Join(d, devca.KeyFile) }
	var farConf, nearConf string
	var args func(conf string) []string
	switch name {
	case "stunnel-pair":
		noResume := "sessionResume = no\n"
		if resume {
			noResume = ""
		}
		farConf = fmt.Sprintf("foreground = yes\npid =\n[far]\naccept = %s\nconnect = %s\ncert = %s\nkey = %s\nCAfile = %s\nverifyChain = yes\nsslVersionMin = TLSv1.3\n%s",
			far, sink, cert(pki.server), key(pki.server), pki.bundle, noResume)
		nearConf = fmt.Sprintf("foreground = yes\npid =\n[near]\nclient = yes\naccept = %s\nconnect = %s\ncert = %s\nkey = %s\nCAfile = %s\nverifyChain = yes\nsslVersionMin = TLSv1.3\n%s",
			near, far, cert(pki.client), key(pki.client), pki.bundle, noResume)
		args = func(conf string) []string { return []string{conf} }
	case "haproxy-pair":
		common := "global\n  maxconn 8000\n  nbthread 1\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 10m\n  timeout server 10m\n"
		noTickets, noReuse := " no-tls-tickets", " no-ssl-reuse"
		if resume {
			noTickets, noReuse = "", ""
		}
		farConf = common + fmt.Sprintf("frontend far\n  bind %s ssl crt %s ca-file %s verify required ssl-min-ver TLSv1.3%s\n  default_backend app\nbackend app\n  server app %s\n",
			far, serverPEM, pki.bundle, noTickets, sink)
		nearConf = common + fmt.Sprintf("frontend near\n  bind %s\n  default_backend far\nbackend far\n  server far %s ssl crt %s ca-file %s verify required ssl-min-ver TLSv1.3%s\n",
			near, far, clientPEM, pki.bundle, noReuse)
		args = func(conf string) []string { return []string{"-db", "-f", conf} }
	case "nginx-pair":
		common := "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\ndaemon off;\nmaster_process off;\nworker_processes 1;\nerror_log stderr error;\npid %s;\nevents { worker_connections 20000; }\n"
		onOff := "off"
		if resume {
			onOff = "on"
		}
		farConf = fmt.Sprintf(common, filepath.Join(dir, "far.pid")) + fmt.Sprintf("stream {\n server {\n  listen %s ssl;\n  ssl_protocols TLSv1.3;\n  ssl_certificate %s;\n  ssl_certificate_key %s;\n  ssl_client_certificate %s;\n  ssl_verify_client on;\n  ssl_session_tickets %s;\n  proxy_half_close on;\n  proxy_pass %s;\n }\n}\n",
			far, cert(pki.server), key(pki.server), pki.bundle, onOff, sink)
		nearConf = fmt.Sprintf(common, filepath.Join(dir, "near.pid")) + fmt.Sprintf("stream {\n server {\n  listen %s;\n  proxy_half_close on;\n  proxy_pass %s;\n  proxy_ssl on;\n  proxy_ssl_protocols TLSv1.3;\n  proxy_ssl_certificate %s;\n  proxy_ssl_certificate_key %s;\n  proxy_ssl_verify off;\n  proxy_ssl_session_reuse %s;\n }\n}\n",
			near, far, cert(pki.client), key(pki.client), onOff)
		args = func(conf string) []string { return []string{"-e", "stderr", "-c", conf} }
	}
	write := func(n, text string) (string, error) {
		p := filepath.Join(dir, n)
		return p, os.WriteFile(p, []byte(text), 0o600)
	}
	fc, err := write("far.conf", farConf)
	if err != nil {
		return nil, err
	}
	nc, err := write("near.conf", nearConf)
	if err != nil {
		return nil, err
	}
	a, err := startProc(ctx, filepath.Join(work, name+"-far.log"), path, nil, args(fc)...)
	if err != nil {
		return nil, err
	}
	b, err := startProc(ctx, filepath.Join(work, name+"-near.log"), path, nil, args(nc)...)
	if err != nil {
		stopAll(a)()
		return nil, err
	}
	time.Sleep(200 * time.Millisecond)
	return &config{name: name, entry: near, pids: []int{a.Process.Pid, b.Process.Pid}, stop: stopAll(a, b)}, nil
}
