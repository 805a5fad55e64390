package keys

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// Private files (keyrings, keys, spools, cached policy, posture tokens) are
// checked and written the same way everywhere.

// CheckPrivate refuses a file or directory that group or others can
// access: the error wraps ErrUnsafePermissions and names what and path,
// and how to fix it. Permission bits are not checked on Windows.
func CheckPrivate(path, what string, fi fs.FileInfo) error {
	if runtime.GOOS == "windows" {
		return nil // permission bits do not describe access there
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		want := "600"
		if fi.IsDir() {
			want = "700"
		}
		return fmt.Errorf("%w: %s %s has mode %04o, group or others can access it (chmod %s %s)",
			ErrUnsafePermissions, what, path, perm, want, path)
	}
	return nil
}

// WriteFileAtomic replaces path with data, with mode, so that a reader sees
// the old file or the new one and never half of one, and a crash after it
// returns keeps the new one: a temporary file beside path (".tmp-" and
// path's name) is written, synced and renamed into place, then the
// directory is synced.
func WriteFileAtomic(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return SyncDir(dir)
}

// SyncDir syncs the directory dir, so that files created, renamed or
// removed in it stay so after a crash.
func SyncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be synced there
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
