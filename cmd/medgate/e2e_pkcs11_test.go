//go:build pkcs11

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// With the pkcs11 tag, the binary under test is the HSM build.
func init() { buildFlags = append(buildFlags, "-tags", "pkcs11") }

// softHSMToken makes a throwaway SoftHSM2 token and returns the keyring
// spec and environment that reach it.
func softHSMToken(t *testing.T) (string, map[string]string) {
	t.Helper()
	module := "/usr/lib/softhsm/libsofthsm2.so"
	util, err := exec.LookPath("softhsm2-util")
	if _, serr := os.Stat(module); serr != nil || err != nil {
		t.Skip("SoftHSM2 not installed: apt-get install softhsm2")
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.Mkdir(tokens, 0o700)
	conf := filepath.Join(dir, "softhsm2.conf")
	os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600)
	cmd := exec.Command(util, "--init-token", "--free", "--label", "medgate", "--pin", "1234", "--so-pin", "5678")
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v\n%s", err, out)
	}
	pin := filepath.Join(dir, "pin")
	os.WriteFile(pin, []byte("1234\n"), 0o600)
	return "pkcs11:module=" + module + ";token=medgate", map[string]string{"SOFTHSM2_CONF": conf, "MEDGATE_KEYRING_PIN_FILE": pin}
}

// TestE2EPKCS11 runs the HSM build against a SoftHSM2 token: keys created
// in the token, a file sealed and opened, rotation, retirement, and two
// sidecars carrying data under the token's keys.
func TestE2EPKCS11(t *testing.T) {
	spec, env := softHSMToken(t)
	env["MEDGATE_KEYRING"] = spec
	run := func(args ...string) (string, error) { return runBinary(env, args...) }
	if out, err := run("keys", "rotate"); err != nil { // the token's first key
		t.Fatalf("keys rotate: %v\n%s", err, out)
	}
	dir := t.TempDir()
	plain := filepath.Join(dir, "study.raw")
	data := bytes.Repeat([]byte("MR slice "+canary+" "), 50000)
	os.WriteFile(plain, data, 0o600)
	sealed, opened := filepath.Join(dir, "study.mgs"), filepath.Join(dir, "study.out")
	if out, err := run("seal", "--in", plain, "--out", sealed); err != nil {
		t.Fatalf("seal: %v\n%s", err, out)
	}
	if out, err := run("open", "--in", sealed, "--out", opened); err != nil {
		t.Fatalf("open: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(opened); !bytes.Equal(b, data) {
		t.Fatal("open through the HSM did not give back the plaintext")
	}
	listIDs := func() []string {
		out, err := run("keys", "list")
		if err != nil {
			t.Fatalf("keys list: %v\n%s", err, out)
		}
		var ids []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			ids = append(ids, strings.Fields(l)[0])
		}
		return ids
	}
	first := listIDs()[0]
	if out, err := run("keys", "rotate"); err != nil {
		t.Fatalf("rotate: %v\n%s", err, out)
	}
	if out, err := run("open", "--in", sealed, "--out", opened); err != nil {
		t.Fatalf("data sealed before rotation: %v\n%s", err, out)
	}

	// Two sidecars whose data keys the token wraps.
	ca := newTestCA(t, "hospital.example")
	app := startHashApp(t, false)
	inEnv := map[string]string{"MEDGATE_KEYRING": spec}
	for k, v := range env {
		inEnv[k] = v
	}
	in := startInbound(t, ca, app, inEnv)
	outEnv := identityEnv(ca.issue("spiffe://hospital.example/lab/ws1", time.Hour), ca.bundle())
	for k, v := range inEnv {
		outEnv[k] = v
	}
	outEnv["MEDGATE_OUTBOUND_LISTEN"] = "127.0.0.1:0"
	outEnv["MEDGATE_OUTBOUND_PEER"] = in.in
	outEnv["MEDGATE_OUTBOUND_PEER_ID"] = "spiffe://hospital.example/pacs"
	lab := startSidecar(t, outEnv)
	got, err := send(lab.out, bytes.NewReader(data))
	if err != nil || got != hashOf(bytes.NewReader(data)) {
		t.Fatalf("transfer under HSM keys: %q, %v", got, err)
	}

	if out, err := run("keys", "retire", first); err != nil {
		t.Fatalf("retire: %v\n%s", err, out)
	}
	if out, err := run("open", "--in", sealed, "--out", filepath.Join(dir, "gone")); err == nil || !strings.Contains(out, "retired") {
		t.Fatalf("data under a retired HSM key: %v\n%s", err, out)
	}
}
