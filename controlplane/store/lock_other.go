//go:build !unix

package store

import (
	"errors"
	"os"
)

func lockExclusive(*os.File) error {
	return errors.New("directory locking is not supported on this platform")
}
