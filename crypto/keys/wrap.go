package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
)

// Software wrapping, used by File: the data key sealed with AES-256-GCM
// under the KEK, with a random nonce, and the KEK's ID bound as associated
// data so a wrapped key cannot be passed off under another ID.
//
//	offset  size  field
//	0       1     format, 1
//	1       12    nonce
//	13      32    encrypted data key
//	45      16    GCM tag
const (
	wrapFormat = 1
	wrappedLen = 1 + 12 + DataKeySize + 16
	wrapAD     = "medgate keyring v1 wrap\x00"
)

func newWrapAEAD(kek []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	return aead, nil
}

func wrapDEK(kek []byte, keyID string, dek []byte) ([]byte, error) {
	aead, err := newWrapAEAD(kek)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1, wrappedLen)
	out[0] = wrapFormat
	return aead.Seal(out, nil, dek, []byte(wrapAD+keyID)), nil
}

func unwrapDEK(kek []byte, keyID string, wrapped []byte) ([]byte, error) {
	if len(wrapped) != wrappedLen || wrapped[0] != wrapFormat {
		return nil, fmt.Errorf("%w: %d bytes, want %d in format %d", ErrUnwrap, len(wrapped), wrappedLen, wrapFormat)
	}
	aead, err := newWrapAEAD(kek)
	if err != nil {
		return nil, err
	}
	dek, err := aead.Open(nil, nil, wrapped[1:], []byte(wrapAD+keyID))
	if err != nil {
		return nil, fmt.Errorf("%w: under key %s", ErrUnwrap, keyID)
	}
	return dek, nil
}
