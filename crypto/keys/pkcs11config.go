package keys

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// ErrPKCS11Unsupported is returned by OpenPKCS11 in a binary built without
// the pkcs11 build tag (the default static build, which has no cgo).
var ErrPKCS11Unsupported = errors.New("keys: built without PKCS#11 support (build with CGO_ENABLED=1 -tags pkcs11)")

// PKCS11Config says which token holds the KEKs and how to log in.
type PKCS11Config struct {
	// Module is the path of the PKCS#11 library, for example
	// /usr/lib/softhsm/libsofthsm2.so.
	Module string

	// TokenLabel names the token.
	TokenLabel string

	// PIN is the user PIN. Set exactly one of PIN and PINFile; the command
	// line fills PIN from an environment variable. The PIN appears in no
	// error, String or LogValue.
	PIN string

	// PINFile is the path of a file holding the user PIN (one trailing
	// newline is ignored).
	PINFile string
}

// String describes the configuration without the PIN.
func (c PKCS11Config) String() string {
	return fmt.Sprintf("pkcs11 module=%s token=%q", c.Module, c.TokenLabel)
}

// LogValue describes the configuration without the PIN.
func (c PKCS11Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("module", c.Module), slog.String("token", c.TokenLabel))
}

func (c PKCS11Config) pin() (string, error) {
	switch {
	case c.Module == "":
		return "", errors.New("keys: pkcs11: module path is empty")
	case c.TokenLabel == "":
		return "", errors.New("keys: pkcs11: token label is empty")
	case c.PIN != "" && c.PINFile != "":
		return "", errors.New("keys: pkcs11: both PIN and PIN file are set, want one")
	case c.PIN != "":
		return c.PIN, nil
	case c.PINFile != "":
		b, err := os.ReadFile(c.PINFile)
		if err != nil {
			return "", fmt.Errorf("keys: pkcs11: read PIN file: %w", err)
		}
		pin := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if pin == "" {
			return "", fmt.Errorf("keys: pkcs11: PIN file %s is empty", c.PINFile)
		}
		return pin, nil
	default:
		return "", errors.New("keys: pkcs11: no PIN: set PIN or PIN file")
	}
}
