//go:build !pkcs11

package keys

import (
	"errors"
	"testing"
)

func TestPKCS11Unsupported(t *testing.T) {
	_, err := OpenPKCS11(PKCS11Config{Module: "/usr/lib/softhsm/libsofthsm2.so", TokenLabel: "T", PIN: "1234"})
	if !errors.Is(err, ErrPKCS11Unsupported) {
		t.Fatalf("OpenPKCS11 without the pkcs11 tag: %v, want ErrPKCS11Unsupported", err)
	}
}
