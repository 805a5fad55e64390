package keys

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// File is a keyring kept in one JSON file on local disk. It holds the KEKs
// in the clear, so the file's protection is the file system's: File
// refuses to load a file, or a file in a directory, that group or others
// can access (ErrUnsafePermissions), and writes it atomically with mode
// 0600 (a temporary file renamed over the old one).
//
// File notices when another process (`medgate keys rotate`, `retire`)
// changed the file and reloads it before the next operation, so a
// retirement takes effect in a running sidecar too. Changes are serialized
// across processes with a lock file beside the keyring (path + ".lock") on
// systems with flock. File is safe for concurrent use.
//
// Retire removes the KEK's material from the file. Copies made before
// (backups, snapshots, blocks the file system has not reused) are outside
// its reach.
type File struct {
	path string
	now  func() time.Time

	mu    sync.Mutex
	state *fileState
	stamp os.FileInfo
}

var (
	_ Keyring = (*File)(nil)
	_ Manager = (*File)(nil)
)

const fileFormat = "medgate-keyring/1"

// fileState is the JSON document.
type fileState struct {
	Format string      `json:"format"`
	Derive *secretJSON `json:"derive"`
	Keys   []*fileKey  `json:"keys"`
}

type secretJSON struct {
	Key   []byte `json:"key"`
	Check []byte `json:"check"`
}

type fileKey struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	State   State     `json:"state"`
	Retired time.Time `json:"retired,omitzero"`
	Key     []byte    `json:"key,omitempty"`
	Check   []byte    `json:"check,omitempty"`
}

// checkValue lets a load notice damaged key material or a key moved to
// another ID: HMAC-SHA256 of a label and the ID under the key, 16 bytes.
func checkValue(key []byte, id string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("medgate keyring v1 check\x00" + id))
	return m.Sum(nil)[:16]
}

// InitFile creates a keyring file at path holding one current KEK, and the
// directory (mode 0700) if it does not exist. It fails if the file exists
// or the directory is group or other accessible.
func InitFile(path string) (*File, error) {
	f := &File{path: path, now: time.Now}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keys: create keyring directory: %w", err)
	}
	if err := checkMode(dir, "directory"); err != nil {
		return nil, err
	}
	err := f.withLock(func() error {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("keys: keyring %s already exists: %w", path, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("keys: %w", err)
		}
		derive := make([]byte, DataKeySize)
		rand.Read(derive)
		st := &fileState{Format: fileFormat, Derive: &secretJSON{Key: derive, Check: checkValue(derive, "derive")}}
		st.Keys = append(st.Keys, f.newKey(st))
		return f.save(st)
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// OpenFile loads the keyring file at path. It fails with
// ErrUnsafePermissions if the file or its directory is group or other
// accessible, and with ErrCorrupt if the file does not check out.
func OpenFile(path string) (*File, error) {
	f := &File{path: path, now: time.Now}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.current(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path returns the keyring file's path.
func (f *File) Path() string { return f.path }

// Wrap implements Keyring.
func (f *File) Wrap(ctx context.Context, dek []byte) (string, []byte, error) {
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}
	if err := checkDEK(dek); err != nil {
		return "", nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := f.current()
	if err != nil {
		return "", nil, err
	}
	for _, k := range st.Keys {
		if k.State == StateCurrent {
			w, err := wrapDEK(k.Key, k.ID, dek)
			return k.ID, w, err
		}
	}
	return "", nil, fmt.Errorf("%w: %s has no current key", ErrCorrupt, f.path)
}

// Unwrap implements Keyring.
func (f *File) Unwrap(ctx context.Context, keyID string, wrapped []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := f.current()
	if err != nil {
		return nil, err
	}
	k, err := find(st, keyID)
	if err != nil {
		return nil, err
	}
	return unwrapDEK(k.Key, k.ID, wrapped)
}

func find(st *fileState, id string) (*fileKey, error) {
	for _, k := range st.Keys {
		if k.ID == id {
			if k.State == StateRetired {
				return nil, fmt.Errorf("%w: %s", ErrKeyRetired, id)
			}
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w: no key %q", ErrKeyUnavailable, id)
}

// Rotate implements Manager.
func (f *File) Rotate(ctx context.Context) (KeyInfo, error) {
	if err := ctx.Err(); err != nil {
		return KeyInfo{}, err
	}
	var info KeyInfo
	err := f.update(func(st *fileState) error {
		for _, k := range st.Keys {
			if k.State == StateCurrent {
				k.State = StateActive
			}
		}
		k := f.newKey(st)
		st.Keys = append(st.Keys, k)
		info = k.info()
		return nil
	})
	return info, err
}

// List implements Manager.
func (f *File) List(ctx context.Context) ([]KeyInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := f.current()
	if err != nil {
		return nil, err
	}
	out := make([]KeyInfo, 0, len(st.Keys))
	for _, k := range st.Keys {
		out = append(out, k.info())
	}
	return out, nil
}

// Retire implements Manager. Retiring a retired key does nothing.
func (f *File) Retire(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return f.update(func(st *fileState) error {
		for _, k := range st.Keys {
			if k.ID != id {
				continue
			}
			switch k.State {
			case StateRetired:
				return nil
			case StateCurrent:
				return fmt.Errorf("%w: %s wraps new data keys; rotate, then retire it", ErrKeyCurrent, id)
			}
			clear(k.Key)
			k.Key, k.Check = nil, nil
			k.State = StateRetired
			k.Retired = f.now().UTC()
			return nil
		}
		return fmt.Errorf("%w: no key %q", ErrKeyUnavailable, id)
	})
}

// Derive returns a 32-byte key for one purpose, named by label (for
// example "pseudonym/v1"), derived with HKDF-SHA256 from a secret the
// keyring keeps for that use. The secret is made by InitFile and does not
// change with Rotate or Retire, so a label always yields the same key from
// the same keyring.
func (f *File) Derive(label string) ([]byte, error) {
	if label == "" {
		return nil, errors.New("keys: derive: empty label")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := f.current()
	if err != nil {
		return nil, err
	}
	k, err := hkdf.Key(sha256.New, st.Derive.Key, nil, "medgate keyring v1 derive\x00"+label, DataKeySize)
	if err != nil {
		return nil, fmt.Errorf("keys: derive: %w", err)
	}
	return k, nil
}

func (f *File) newKey(st *fileState) *fileKey {
	k := &fileKey{Created: f.now().UTC().Truncate(time.Millisecond), State: StateCurrent, Key: make([]byte, DataKeySize)}
	for {
		k.ID = newKeyID(k.Created)
		if _, err := find(st, k.ID); errors.Is(err, ErrKeyUnavailable) {
			break
		}
	}
	rand.Read(k.Key)
	k.Check = checkValue(k.Key, k.ID)
	return k
}

func (k *fileKey) info() KeyInfo {
	return KeyInfo{ID: k.ID, Created: k.Created, State: k.State, Retired: k.Retired}
}

// current returns the loaded state, reloading the file if it changed on
// disk since the last load. f.mu must be held.
func (f *File) current() (*fileState, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return nil, fmt.Errorf("keys: open keyring: %w", err)
	}
	if f.state != nil && os.SameFile(fi, f.stamp) && fi.ModTime().Equal(f.stamp.ModTime()) && fi.Size() == f.stamp.Size() {
		return f.state, nil
	}
	st, fi, err := f.load()
	if err != nil {
		return nil, err
	}
	f.state, f.stamp = st, fi
	return st, nil
}

func (f *File) load() (*fileState, os.FileInfo, error) {
	if err := checkMode(filepath.Dir(f.path), "directory"); err != nil {
		return nil, nil, err
	}
	file, err := os.Open(f.path)
	if err != nil {
		return nil, nil, fmt.Errorf("keys: open keyring: %w", err)
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("keys: open keyring: %w", err)
	}
	if err := checkFileMode(f.path, fi); err != nil {
		return nil, nil, err
	}
	var st fileState
	dec := json.NewDecoder(file)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, f.path, err)
	}
	if err := st.validate(); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, f.path, err)
	}
	return &st, fi, nil
}

func (st *fileState) validate() error {
	if st.Format != fileFormat {
		return fmt.Errorf("format %q, want %q", st.Format, fileFormat)
	}
	if st.Derive == nil || len(st.Derive.Key) != DataKeySize || !hmac.Equal(st.Derive.Check, checkValue(st.Derive.Key, "derive")) {
		return errors.New("derive secret missing or damaged")
	}
	seen := map[string]bool{}
	current := 0
	for i, k := range st.Keys {
		if k.ID == "" || strings.ContainsFunc(k.ID, func(r rune) bool { return r < 0x21 || r > 0x7e }) || len(k.ID) > 255 {
			return fmt.Errorf("key %d: invalid ID %q", i, k.ID)
		}
		if seen[k.ID] {
			return fmt.Errorf("key %s appears twice", k.ID)
		}
		seen[k.ID] = true
		switch k.State {
		case StateCurrent, StateActive:
			if k.State == StateCurrent {
				current++
			}
			if len(k.Key) != DataKeySize {
				return fmt.Errorf("key %s: material is %d bytes, want %d", k.ID, len(k.Key), DataKeySize)
			}
			if !hmac.Equal(k.Check, checkValue(k.Key, k.ID)) {
				return fmt.Errorf("key %s: check value does not match its material", k.ID)
			}
		case StateRetired:
			if len(k.Key) != 0 {
				return fmt.Errorf("key %s: retired but still holds material", k.ID)
			}
		default:
			return fmt.Errorf("key %s: unknown state %q", k.ID, k.State)
		}
	}
	if current != 1 {
		return fmt.Errorf("%d current keys, want 1", current)
	}
	return nil
}

// update reloads the file under the cross-process lock, applies change and
// writes the result.
func (f *File) update(change func(*fileState) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.withLock(func() error {
		f.state = nil // read what is on disk now
		st, err := f.current()
		if err != nil {
			return err
		}
		// Work on a copy so a failed change or write leaves memory as on disk.
		cp := *st
		cp.Keys = make([]*fileKey, len(st.Keys))
		for i, k := range st.Keys {
			kc := *k
			kc.Key = slices.Clone(k.Key)
			cp.Keys[i] = &kc
		}
		if err := change(&cp); err != nil {
			return err
		}
		if err := f.save(&cp); err != nil {
			return err
		}
		for _, k := range st.Keys {
			clear(k.Key)
		}
		f.state = nil
		_, err = f.current()
		return err
	})
}

// save writes st to f.path atomically with mode 0600.
func (f *File) save(st *fileState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("keys: encode keyring: %w", err)
	}
	err = WriteFileAtomic(f.path, append(b, '\n'), 0o600)
	clear(b)
	if err != nil {
		return fmt.Errorf("keys: write keyring %s: %w", f.path, err)
	}
	return nil
}

// checkMode refuses a path that group or others can access.
func checkMode(path, what string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("keys: keyring %s: %w", what, err)
	}
	return CheckPrivate(path, "keyring "+what, fi)
}

func checkFileMode(path string, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("keys: keyring %s is not a regular file", path)
	}
	return CheckPrivate(path, "keyring file", fi)
}
