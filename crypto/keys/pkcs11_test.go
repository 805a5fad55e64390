//go:build pkcs11

package keys

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"
)

var softHSMModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

const (
	testTokenLabel = "T"
	testPIN        = "1234"
)

// These tests need cgo and SoftHSM2 (Debian package softhsm2) and run with
//
//	CGO_ENABLED=1 go test -tags pkcs11 -race ./crypto/keys/
//
// They skip when SoftHSM2 is not installed.

// softHSM makes a throwaway SoftHSM2 token in a temporary directory and
// returns the configuration to open it.
func softHSM(t *testing.T) PKCS11Config {
	t.Helper()
	module := ""
	for _, m := range softHSMModules {
		if _, err := os.Stat(m); err == nil {
			module = m
			break
		}
	}
	util, err := exec.LookPath("softhsm2-util")
	if module == "" || err != nil {
		t.Skip("SoftHSM2 not installed (libsofthsm2.so or softhsm2-util missing): apt-get install softhsm2")
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\nlog.level = ERROR\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	out, err := exec.Command(util, "--init-token", "--free", "--label", testTokenLabel, "--pin", testPIN, "--so-pin", "5678").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return PKCS11Config{Module: module, TokenLabel: testTokenLabel, PIN: testPIN}
}

func openHSM(t *testing.T, cfg PKCS11Config) *PKCS11 {
	t.Helper()
	p, err := OpenPKCS11(cfg)
	if err != nil {
		t.Fatalf("OpenPKCS11: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestPKCS11Lifecycle(t *testing.T) {
	ctx := context.Background()
	cfg := softHSM(t)
	p := openHSM(t, cfg)

	if list, err := p.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("new token lists %v, %v", list, err)
	}
	if _, _, err := p.Wrap(ctx, dek(t)); !errors.Is(err, ErrKeyUnavailable) {
		t.Fatalf("Wrap on an empty token: %v, want ErrKeyUnavailable", err)
	}
	first, err := p.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d1 := dek(t)
	id1, w1, err := p.Wrap(ctx, d1)
	if err != nil || id1 != first.ID {
		t.Fatalf("Wrap: %s, %v; want %s", id1, err, first.ID)
	}
	if got, err := p.Unwrap(ctx, id1, w1); err != nil || !bytes.Equal(got, d1) {
		t.Fatalf("Unwrap: %v", err)
	}

	second, err := p.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d2 := dek(t)
	id2, w2, err := p.Wrap(ctx, d2)
	if err != nil || id2 != second.ID {
		t.Fatalf("Wrap after rotate: %s, %v; want %s", id2, err, second.ID)
	}
	if got, err := p.Unwrap(ctx, id1, w1); err != nil || !bytes.Equal(got, d1) {
		t.Fatalf("old key after rotate: %v", err)
	}
	if got := states(t, p); !equalStates(got, []State{StateActive, StateCurrent}) {
		t.Fatalf("after rotate: %v", got)
	}

	// Keys are sensitive and cannot leave the token.
	h, err := p.find(id1)
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := p.ctx.GetAttributeValue(p.session, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil)})
	if err != nil || len(attrs) != 1 || !bytes.Equal(attrs[0].Value, []byte{0}) {
		t.Fatalf("CKA_EXTRACTABLE: %v, %v; want false", attrs, err)
	}
	if _, err := p.ctx.GetAttributeValue(p.session, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); err == nil {
		t.Fatal("token revealed a KEK's value")
	}

	for name, tt := range map[string]struct {
		id      string
		wrapped []byte
		want    error
	}{
		"flipped tag":    {id1, append(bytes.Clone(w1[:len(w1)-1]), w1[len(w1)-1]^1), ErrUnwrap},
		"flipped nonce":  {id1, append([]byte{w1[0], w1[1] ^ 1}, w1[2:]...), ErrUnwrap},
		"short":          {id1, w1[:10], ErrUnwrap},
		"other key's ID": {id2, w1, ErrUnwrap},
		"unknown ID":     {"kek-20200101T000000.000Z-00000000", w1, ErrKeyUnavailable},
		"not an ID":      {"something", w1, ErrKeyUnavailable},
	} {
		if _, err := p.Unwrap(ctx, tt.id, tt.wrapped); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", name, err, tt.want)
		}
	}

	if err := p.Retire(ctx, id2); !errors.Is(err, ErrKeyCurrent) {
		t.Fatalf("retire current: %v, want ErrKeyCurrent", err)
	}
	if err := p.Retire(ctx, id1); err != nil {
		t.Fatal(err)
	}
	if err := p.Retire(ctx, id1); err != nil {
		t.Fatalf("second retire: %v", err)
	}
	if _, err := p.Unwrap(ctx, id1, w1); !errors.Is(err, ErrKeyRetired) {
		t.Fatalf("Unwrap under retired key: %v, want ErrKeyRetired", err)
	}
	if got := states(t, p); !equalStates(got, []State{StateRetired, StateCurrent}) {
		t.Fatalf("after retire: %v", got)
	}

	// The token keeps everything across sessions.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	q := openHSM(t, cfg)
	if got, err := q.Unwrap(ctx, id2, w2); err != nil || !bytes.Equal(got, d2) {
		t.Fatalf("after reopen: %v", err)
	}
	if _, err := q.Unwrap(ctx, id1, w1); !errors.Is(err, ErrKeyRetired) {
		t.Fatalf("retired key after reopen: %v, want ErrKeyRetired", err)
	}
}

func TestPKCS11Login(t *testing.T) {
	cfg := softHSM(t)
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(testPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile := cfg
	fromFile.PIN, fromFile.PINFile = "", pinFile
	p := openHSM(t, fromFile)
	p.Close()

	wrong := cfg
	wrong.PIN = "987654"
	_, err := OpenPKCS11(wrong)
	if err == nil {
		t.Fatal("wrong PIN accepted")
	}
	if strings.Contains(err.Error(), wrong.PIN) {
		t.Fatalf("error reveals the PIN: %v", err)
	}
	for _, s := range []string{cfg.String(), cfg.LogValue().String()} {
		if strings.Contains(s, testPIN) {
			t.Fatalf("config description reveals the PIN: %s", s)
		}
	}
	noToken := cfg
	noToken.TokenLabel = "absent"
	if _, err := OpenPKCS11(noToken); err == nil {
		t.Fatal("opened a token that does not exist")
	}
	both := cfg
	both.PINFile = pinFile
	if _, err := OpenPKCS11(both); err == nil {
		t.Fatal("accepted both PIN and PIN file")
	}
}

func TestPKCS11Concurrent(t *testing.T) {
	ctx := context.Background()
	p := openHSM(t, softHSM(t))
	if _, err := p.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 4 {
		wg.Go(func() {
			for range 10 {
				d := make([]byte, DataKeySize)
				id, w, err := p.Wrap(ctx, d)
				if err == nil {
					_, err = p.Unwrap(ctx, id, w)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 3 {
			if _, err := p.Rotate(ctx); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
