package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingRelay forwards TCP connections to target and keeps a copy of
// every byte that crosses it, both ways.
type recordingRelay struct {
	addr string
	mu   sync.Mutex
	rec  bytes.Buffer
}

func startRecordingRelay(t *testing.T, target string) *recordingRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	r := &recordingRelay{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			copyRec := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 {
						r.mu.Lock()
						r.rec.Write(buf[:n])
						r.mu.Unlock()
						dst.Write(buf[:n])
					}
					if err != nil {
						dst.(*net.TCPConn).CloseWrite()
						return
					}
				}
			}
			go copyRec(up, c)
			go copyRec(c, up)
		}
	}()
	return r
}

func (r *recordingRelay) captured() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.rec.Bytes()...)
}

func TestE2EInnerLayerCaptureAndKeys(t *testing.T) {
	ca := newTestCA(t, "hospital.example")
	app := startHashApp(t, true)
	in := startInbound(t, ca, app, nil)
	relay := startRecordingRelay(t, in.in)

	env := identityEnv(ca.issue("spiffe://hospital.example/lab/ws1", time.Hour), ca.bundle())
	env["MEDGATE_OUTBOUND_LISTEN"] = "127.0.0.1:0"
	env["MEDGATE_OUTBOUND_PEER"] = relay.addr
	env["MEDGATE_OUTBOUND_PEER_ID"] = "spiffe://hospital.example/pacs"
	lab := startSidecar(t, env)

	marker := strings.Repeat("PLAINTEXT-MARKER-0123456789 ", 1000)
	msg := "MSH|^~\\&|LAB|HOSP|||20261122||ORU^R01|1|P|2.5\rPID|1||4711||" + canary + "\r" + marker
	got, err := send(lab.out, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if got != hashOf(strings.NewReader(msg)) {
		t.Fatal("data changed on the way")
	}
	if !strings.Contains(app.seen.String(), canary) {
		t.Fatal("the app did not receive the message")
	}
	capture := relay.captured()
	if len(capture) < len(marker) {
		t.Fatalf("relay captured only %d bytes", len(capture))
	}
	for _, s := range []string{canary, "Zebulon", "PLAINTEXT-MARKER", "4711"} {
		if bytes.Contains(capture, []byte(s)) {
			t.Errorf("%q crossed between the sidecars in the clear", s)
		}
	}

	// A sidecar whose keyring lacks the sender's key cannot read: refused.
	other := filepath.Join(t.TempDir(), "k", "other.json")
	if out, err := runBinary(nil, "keys", "init", "--keyring", other); err != nil {
		t.Fatal(err, out)
	}
	keyless := startInbound(t, ca, app, map[string]string{"MEDGATE_KEYRING": other})
	env["MEDGATE_OUTBOUND_PEER"] = keyless.in
	lab2 := startSidecar(t, env)
	if _, err := send(lab2.out, strings.NewReader(msg)); err == nil {
		t.Fatal("a sidecar without the sender's key accepted the session")
	}
	if evs := keyless.eventsWith(func(e map[string]any) bool { return e["verdict"] == "deny" && hasReason(e, "key_unavailable") }); len(evs) == 0 {
		t.Error("no deny event with reason key_unavailable")
	}
}

func TestE2ESealOpen(t *testing.T) {
	dir := t.TempDir()
	kr := filepath.Join(dir, "keys", "keyring.json")
	env := map[string]string{"MEDGATE_KEYRING": kr}
	run := func(args ...string) (string, error) { return runBinary(env, args...) }
	if out, err := run("keys", "init"); err != nil {
		t.Fatal(err, out)
	}
	plain := filepath.Join(dir, "series.raw")
	data := bytes.Repeat([]byte("CT slice "+canary+" "), 200000) // several segments
	os.WriteFile(plain, data, 0o600)
	sealed := filepath.Join(dir, "series.mgs")
	if out, err := run("seal", "--in", plain, "--out", sealed); err != nil {
		t.Fatal(err, out)
	}
	ct, _ := os.ReadFile(sealed)
	if bytes.Contains(ct, []byte("Zebulon")) {
		t.Fatal("sealed file holds plaintext")
	}
	opened := filepath.Join(dir, "series.out")
	if out, err := run("open", "--in", sealed, "--out", opened); err != nil {
		t.Fatal(err, out)
	}
	if b, _ := os.ReadFile(opened); !bytes.Equal(b, data) {
		t.Fatal("open did not give back the plaintext")
	}

	refused := func(name string, mutate func([]byte) []byte, want string) {
		t.Helper()
		bad := filepath.Join(dir, name+".mgs")
		os.WriteFile(bad, mutate(append([]byte(nil), ct...)), 0o600)
		dst := filepath.Join(dir, name+".out")
		out, err := run("open", "--in", bad, "--out", dst)
		if err == nil {
			t.Errorf("%s: open succeeded", name)
		}
		if !strings.Contains(out, want) {
			t.Errorf("%s: error %q does not say %q", name, out, want)
		}
		if _, err := os.Stat(dst); err == nil {
			t.Errorf("%s: a refused input left an output file", name)
		}
		if matches, _ := filepath.Glob(filepath.Join(dir, ".medgate-open-*")); len(matches) > 0 {
			t.Errorf("%s: temporary files left: %v", name, matches)
		}
	}
	refused("flipped", func(b []byte) []byte { b[len(b)/2] ^= 1; return b }, "authentication failed")
	refused("truncated", func(b []byte) []byte { return b[:len(b)-100] }, "truncated")
	refused("header", func(b []byte) []byte { b[6] ^= 1; return b }, "stream:")

	// Rotation: new data under the new key, old data still opens; retiring
	// the old key makes what it protected unreadable.
	list := func() []string {
		out, err := run("keys", "list")
		if err != nil {
			t.Fatal(err, out)
		}
		var ids []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			ids = append(ids, strings.Fields(l)[0])
		}
		return ids
	}
	old := list()[0]
	if out, err := run("keys", "rotate"); err != nil {
		t.Fatal(err, out)
	}
	if out, err := run("open", "--in", sealed, "--out", opened); err != nil {
		t.Fatalf("data sealed before rotation no longer opens: %v %s", err, out)
	}
	if out, err := run("keys", "retire", old); err != nil || !strings.Contains(out, "can no longer be read") {
		t.Fatalf("retire: %v %s", err, out)
	}
	out, err := run("open", "--in", sealed, "--out", filepath.Join(dir, "shredded.out"))
	if err == nil || !strings.Contains(out, "retired") {
		t.Fatalf("data under a retired key: %v %s", err, out)
	}
}
