package store

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/medgate/medgate/crypto/keys"
)

// GenerateSigner creates a new Ed25519 checkpoint key and writes it to path
// as a PEM PKCS#8 "PRIVATE KEY" with mode 0600. It refuses to overwrite an
// existing file.
func GenerateSigner(path string) (ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("store: generate checkpoint key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("store: encode checkpoint key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: create checkpoint key file: %w", err)
	}
	err = pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("store: write checkpoint key file %s: %w", path, err)
	}
	return key, nil
}

// LoadSigner reads an Ed25519 private key from path: PEM PKCS#8
// ("PRIVATE KEY"), or raw bytes (a 32-byte seed or a 64-byte private key).
// It refuses a file that group or others may read or write.
func LoadSigner(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("store: open checkpoint key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("store: stat checkpoint key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("store: checkpoint key %s is not a regular file", path)
	}
	if err := keys.CheckPrivate(path, "checkpoint key", fi); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("store: read checkpoint key %s: %w", path, err)
	}
	key, err := parsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("store: checkpoint key %s: %w", path, err)
	}
	return key, nil
}

func parsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "PRIVATE KEY" {
			return nil, fmt.Errorf("PEM block %q, want PRIVATE KEY (PKCS#8)", blk.Type)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, errors.New("PKCS#8 private key does not parse")
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%T key, want Ed25519", k)
		}
		return ek, nil
	}
	switch len(b) {
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(b), nil
	case ed25519.PrivateKeySize:
		k := ed25519.NewKeyFromSeed(b[:ed25519.SeedSize])
		if string(k[ed25519.SeedSize:]) != string(b[ed25519.SeedSize:]) {
			return nil, errors.New("raw 64-byte key: public half does not match the seed")
		}
		return k, nil
	}
	return nil, fmt.Errorf("neither PEM nor a raw Ed25519 key (%d bytes)", len(b))
}

// LoadPublicKey reads an Ed25519 public key from path: PEM PKIX ("PUBLIC
// KEY"), raw 32 bytes, or a private key file as LoadSigner reads it (whose
// public half it returns; the permission check applies).
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("store: read public key: %w", err)
	}
	if blk, _ := pem.Decode(b); blk != nil && blk.Type == "PUBLIC KEY" {
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("store: public key %s does not parse", path)
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("store: public key %s is %T, want Ed25519", path, k)
		}
		return ek, nil
	}
	if len(b) == ed25519.PublicKeySize {
		return ed25519.PublicKey(b), nil
	}
	key, err := LoadSigner(path)
	if err != nil {
		return nil, err
	}
	return PublicKey(key), nil
}

// WritePublicKey writes pub to path as PEM PKIX ("PUBLIC KEY"), mode 0644,
// replacing any file there.
func WritePublicKey(path string, pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("store: public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fmt.Errorf("store: encode public key: %w", err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("store: write public key: %w", err)
	}
	return nil
}
