// Package keys holds medgate's envelope keys: data keys (DEKs) that seal
// one tunnel direction, file or spool, wrapped under key-encryption keys
// (KEKs) that stay in a keyring.
//
// A Keyring wraps and unwraps data keys; a Manager rotates, lists and
// retires the KEKs behind it. Two implementations exist: File, a JSON file
// on local disk (the default), and PKCS11, keys inside a hardware or
// software security module, built only with the pkcs11 build tag because
// it needs cgo.
//
// KEKs go through three states. The current KEK wraps new data keys; an
// active KEK was current before a rotation and still unwraps what it
// wrapped; a retired KEK has been destroyed (crypto-shredding): every data
// key it wrapped, and so all data sealed under those keys, can no longer
// be read by anyone holding only this keyring.
//
// Everything works under GODEBUG=fips140=only: wrapping uses AES-256-GCM
// with random nonces (crypto/cipher.NewGCMWithRandomNonce) and derivations
// use HKDF-SHA256 and HMAC-SHA256.
package keys

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// DataKeySize is the size of a data key, and of a KEK.
const DataKeySize = 32

// Errors a caller can branch on; test with errors.Is.
var (
	// ErrKeyUnavailable means the keyring has no key with the ID asked for.
	// The tunnel reports it as reason key_unavailable.
	ErrKeyUnavailable = errors.New("keys: key unavailable")

	// ErrKeyRetired means the key was retired and its material destroyed:
	// what it protected cannot be recovered from this keyring.
	ErrKeyRetired = errors.New("keys: key retired, data it protected can no longer be read")

	// ErrUnwrap means a wrapped key did not authenticate under the KEK its
	// ID names: it was changed, or wrapped under another key.
	ErrUnwrap = errors.New("keys: wrapped key failed authentication")

	// ErrUnsafePermissions means a keyring file or its directory can be
	// read or written by group or others.
	ErrUnsafePermissions = errors.New("keys: unsafe permissions")

	// ErrCorrupt means a keyring file is malformed or fails its own checks.
	ErrCorrupt = errors.New("keys: keyring file is corrupt")

	// ErrKeyCurrent means the current KEK cannot be retired: rotate first.
	ErrKeyCurrent = errors.New("keys: key is current")
)

// Keyring wraps data keys under its current KEK and unwraps them under the
// KEK their ID names. Implementations are safe for concurrent use.
type Keyring interface {
	// Wrap wraps a DataKeySize-byte data key under the current KEK and
	// returns that KEK's ID with the wrapped bytes.
	Wrap(ctx context.Context, dek []byte) (keyID string, wrapped []byte, err error)

	// Unwrap returns the data key that Wrap wrapped under keyID. It fails
	// with ErrKeyUnavailable, ErrKeyRetired or ErrUnwrap.
	Unwrap(ctx context.Context, keyID string, wrapped []byte) ([]byte, error)
}

// Manager administers the KEKs of a keyring (`medgate keys`).
type Manager interface {
	// Rotate creates a new KEK and makes it current; the previous current
	// KEK becomes active and keeps unwrapping what it wrapped.
	Rotate(ctx context.Context) (KeyInfo, error)

	// List returns every KEK, oldest first.
	List(ctx context.Context) ([]KeyInfo, error)

	// Retire destroys the KEK with the given ID. What it wrapped becomes
	// unreadable for good. The current KEK cannot be retired
	// (ErrKeyCurrent).
	Retire(ctx context.Context, id string) error
}

// State is where a KEK is in its life.
type State string

// The states of a KEK.
const (
	StateCurrent State = "current" // wraps new data keys
	StateActive  State = "active"  // unwraps only
	StateRetired State = "retired" // destroyed
)

// KeyInfo describes a KEK without its material.
type KeyInfo struct {
	ID      string
	Created time.Time
	State   State
	Retired time.Time // zero unless State is StateRetired and the time is known
}

// NewDataKey returns a fresh random data key from crypto/rand.
func NewDataKey() ([]byte, error) {
	k := make([]byte, DataKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("keys: new data key: %w", err)
	}
	return k, nil
}

// newKeyID names a new KEK by its creation time and four random bytes, so
// that IDs sort by age and never repeat: kek-20260517T101500.123Z-1a2b3c4d.
// IDs are printable ASCII without spaces, as stream headers require.
func newKeyID(now time.Time) string {
	var r [4]byte
	rand.Read(r[:])
	return "kek-" + now.UTC().Format("20060102T150405.000Z") + "-" + hex.EncodeToString(r[:])
}

func checkDEK(dek []byte) error {
	if len(dek) != DataKeySize {
		return fmt.Errorf("keys: data key is %d bytes, want %d", len(dek), DataKeySize)
	}
	return nil
}
