//go:build unix

package store

import (
	"os"
	"syscall"
)

// lockExclusive takes an exclusive advisory lock on f without waiting. The
// lock goes with f's descriptor: closing f (or the process ending) drops it.
func lockExclusive(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
