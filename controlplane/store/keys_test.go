package store

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeys(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "checkpoint.key")
	key, err := GenerateSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	if _, err := GenerateSigner(path); err == nil {
		t.Error("GenerateSigner overwrote an existing key")
	}
	loaded, err := LoadSigner(path)
	if err != nil || !key.Equal(loaded) {
		t.Fatalf("LoadSigner = %v; want the generated key", err)
	}
	pubPath := filepath.Join(dir, "checkpoint.pub")
	if err := WritePublicKey(pubPath, PublicKey(key)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{pubPath, path} {
		pub, err := LoadPublicKey(p)
		if err != nil || !pub.Equal(PublicKey(key)) {
			t.Errorf("LoadPublicKey(%s) = %v; want the key's public half", filepath.Base(p), err)
		}
	}

	// Raw forms.
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	want := ed25519.NewKeyFromSeed(seed)
	for name, content := range map[string][]byte{"seed": seed, "full": want} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, content, 0o600)
		if k, err := LoadSigner(p); err != nil || !k.Equal(want) {
			t.Errorf("LoadSigner(raw %s) = %v", name, err)
		}
	}
	rawPub := filepath.Join(dir, "raw.pub")
	os.WriteFile(rawPub, PublicKey(want), 0o644)
	if pub, err := LoadPublicKey(rawPub); err != nil || !pub.Equal(PublicKey(want)) {
		t.Errorf("LoadPublicKey(raw) = %v", err)
	}

	for _, tc := range []struct {
		name    string
		content []byte
		mode    os.FileMode
		wantErr string
	}{
		{"group readable", seed, 0o640, "chmod 600"},
		{"world readable", seed, 0o604, "chmod 600"},
		{"wrong size", []byte("short"), 0o600, "neither PEM"},
		{"public key as private", []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), 0o600, "want PRIVATE KEY"},
		{"mismatched halves", append(seed[:32:32], bytes.Repeat([]byte{1}, 32)...), 0o600, "does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "k")
			os.WriteFile(p, tc.content, 0o600)
			os.Chmod(p, tc.mode)
			_, err := LoadSigner(p)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("LoadSigner = %v, want an error containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), string(seed[:4])) {
				t.Errorf("error holds key bytes")
			}
		})
	}
}
