//go:build !pkcs11

package keys

import "context"

// PKCS11 keeps KEKs in a PKCS#11 token. This build has no PKCS#11 support:
// OpenPKCS11 always fails with ErrPKCS11Unsupported.
type PKCS11 struct{}

var (
	_ Keyring = (*PKCS11)(nil)
	_ Manager = (*PKCS11)(nil)
)

// OpenPKCS11 fails with ErrPKCS11Unsupported in this build.
func OpenPKCS11(PKCS11Config) (*PKCS11, error) { return nil, ErrPKCS11Unsupported }

// Wrap implements Keyring.
func (*PKCS11) Wrap(context.Context, []byte) (string, []byte, error) {
	return "", nil, ErrPKCS11Unsupported
}

// Unwrap implements Keyring.
func (*PKCS11) Unwrap(context.Context, string, []byte) ([]byte, error) {
	return nil, ErrPKCS11Unsupported
}

// Rotate implements Manager.
func (*PKCS11) Rotate(context.Context) (KeyInfo, error) { return KeyInfo{}, ErrPKCS11Unsupported }

// List implements Manager.
func (*PKCS11) List(context.Context) ([]KeyInfo, error) { return nil, ErrPKCS11Unsupported }

// Retire implements Manager.
func (*PKCS11) Retire(context.Context, string) error { return ErrPKCS11Unsupported }

// Close does nothing in this build.
func (*PKCS11) Close() error { return nil }
