//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package keys

// withLock runs fn. Without flock, changes from two processes at once are
// not serialized here.
func (f *File) withLock(fn func() error) error { return fn() }
