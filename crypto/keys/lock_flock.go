//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package keys

import (
	"fmt"
	"os"
	"syscall"
)

// withLock runs fn holding an exclusive flock on path + ".lock", so that
// processes changing the same keyring take turns.
func (f *File) withLock(fn func() error) error {
	lf, err := os.OpenFile(f.path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("keys: lock keyring: %w", err)
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("keys: lock keyring: %w", err)
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
	return fn()
}
