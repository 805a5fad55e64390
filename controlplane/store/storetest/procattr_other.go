//go:build !linux

package storetest

import "syscall"

func orphanSignal(*syscall.SysProcAttr) {}
