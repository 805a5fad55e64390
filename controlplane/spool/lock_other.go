//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package spool

import "io"

type noLock struct{}

func (noLock) Close() error { return nil }

// lockDir does nothing without flock: two processes opening one spool are
// not kept apart here.
func lockDir(string) (io.Closer, error) { return noLock{}, nil }
