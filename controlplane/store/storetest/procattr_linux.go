package storetest

import "syscall"

// orphanSignal makes the kernel stop postgres at once if the test process
// dies without running its cleanups (a go test timeout, a kill).
func orphanSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGQUIT }
