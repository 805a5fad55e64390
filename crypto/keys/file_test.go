package keys

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// privateDir returns a new directory only its owner can access.
func privateDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newFile(t *testing.T) *File {
	t.Helper()
	f, err := InitFile(filepath.Join(t.TempDir(), "keys", "keyring.json"))
	if err != nil {
		t.Fatalf("InitFile: %v", err)
	}
	return f
}

func dek(t *testing.T) []byte {
	t.Helper()
	k, err := NewDataKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func states(t *testing.T, m Manager) []State {
	t.Helper()
	list, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []State
	for _, k := range list {
		out = append(out, k.State)
	}
	return out
}

func equalStates(a, b []State) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFileLifecycle(t *testing.T) {
	ctx := context.Background()
	f := newFile(t)
	if got := states(t, f); !equalStates(got, []State{StateCurrent}) {
		t.Fatalf("after init: %v", got)
	}
	for _, mode := range []string{f.Path(), filepath.Dir(f.Path())} {
		fi, err := os.Stat(mode)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s created with mode %v", mode, fi.Mode())
		}
	}

	d1 := dek(t)
	id1, w1, err := f.Wrap(ctx, d1)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := f.Unwrap(ctx, id1, w1); err != nil || !bytes.Equal(got, d1) {
		t.Fatalf("Unwrap: %v", err)
	}

	rot, err := f.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rot.ID == id1 || rot.State != StateCurrent {
		t.Fatalf("Rotate returned %+v", rot)
	}
	if got := states(t, f); !equalStates(got, []State{StateActive, StateCurrent}) {
		t.Fatalf("after rotate: %v", got)
	}
	d2 := dek(t)
	id2, w2, err := f.Wrap(ctx, d2)
	if err != nil || id2 != rot.ID {
		t.Fatalf("Wrap after rotate: %s, %v; want %s", id2, err, rot.ID)
	}
	if got, err := f.Unwrap(ctx, id1, w1); err != nil || !bytes.Equal(got, d1) {
		t.Fatalf("old key after rotate: %v", err)
	}

	if err := f.Retire(ctx, id2); !errors.Is(err, ErrKeyCurrent) {
		t.Fatalf("retire current: %v, want ErrKeyCurrent", err)
	}
	if err := f.Retire(ctx, "kek-nope"); !errors.Is(err, ErrKeyUnavailable) {
		t.Fatalf("retire unknown: %v, want ErrKeyUnavailable", err)
	}
	oldMaterial := base64.StdEncoding.EncodeToString(f.state.Keys[0].Key)
	if err := f.Retire(ctx, id1); err != nil {
		t.Fatal(err)
	}
	if err := f.Retire(ctx, id1); err != nil {
		t.Fatalf("second retire: %v", err)
	}
	if got := states(t, f); !equalStates(got, []State{StateRetired, StateCurrent}) {
		t.Fatalf("after retire: %v", got)
	}
	_, err = f.Unwrap(ctx, id1, w1)
	if !errors.Is(err, ErrKeyRetired) {
		t.Fatalf("Unwrap under retired key: %v, want ErrKeyRetired", err)
	}
	if !strings.Contains(err.Error(), "can no longer be read") {
		t.Errorf("retired error does not say the data is lost: %v", err)
	}
	raw, err := os.ReadFile(f.Path())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(oldMaterial)) {
		t.Fatal("retired key material is still in the file")
	}
	if got, err := f.Unwrap(ctx, id2, w2); err != nil || !bytes.Equal(got, d2) {
		t.Fatalf("current key after retire: %v", err)
	}
	if _, err := f.Unwrap(ctx, "kek-unknown", w2); !errors.Is(err, ErrKeyUnavailable) {
		t.Fatalf("unknown key ID: %v, want ErrKeyUnavailable", err)
	}

	g, err := OpenFile(f.Path())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := g.Unwrap(ctx, id2, w2); err != nil || !bytes.Equal(got, d2) {
		t.Fatalf("reopened: %v", err)
	}
	list, _ := g.List(ctx)
	if list[0].Retired.IsZero() || list[0].Created.IsZero() {
		t.Errorf("list lost times: %+v", list[0])
	}
	fi, _ := os.Stat(f.Path())
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode after rewrite %v, want 0600", fi.Mode())
	}
}

func TestInitFileExists(t *testing.T) {
	f := newFile(t)
	if _, err := InitFile(f.Path()); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("InitFile over an existing keyring: %v, want fs.ErrExist", err)
	}
}

// Another process (here another File) rotates and retires: a running one
// sees it at its next operation.
func TestFileSeesChangesFromOthers(t *testing.T) {
	ctx := context.Background()
	running := newFile(t)
	admin, err := OpenFile(running.Path())
	if err != nil {
		t.Fatal(err)
	}
	d := dek(t)
	oldID, w, err := running.Wrap(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	rot, err := admin.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id, _, err := running.Wrap(ctx, d); err != nil || id != rot.ID {
		t.Fatalf("running keyring wraps under %s, %v; want the rotated %s", id, err, rot.ID)
	}
	if err := admin.Retire(ctx, oldID); err != nil {
		t.Fatal(err)
	}
	if _, err := running.Unwrap(ctx, oldID, w); !errors.Is(err, ErrKeyRetired) {
		t.Fatalf("running keyring after retire elsewhere: %v, want ErrKeyRetired", err)
	}
}

func TestPermissions(t *testing.T) {
	f := newFile(t)
	dir := filepath.Dir(f.Path())
	tests := []struct {
		name     string
		path     string
		mode     os.FileMode
		restore  os.FileMode
		wantText string
	}{
		{"file group readable", f.Path(), 0o640, 0o600, "0640"},
		{"file world readable", f.Path(), 0o604, 0o600, "0604"},
		{"directory group accessible", dir, 0o750, 0o700, "0750"},
		{"directory world accessible", dir, 0o755, 0o700, "0755"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.Chmod(tt.path, tt.mode); err != nil {
				t.Fatal(err)
			}
			defer os.Chmod(tt.path, tt.restore)
			_, err := OpenFile(f.Path())
			if !errors.Is(err, ErrUnsafePermissions) {
				t.Fatalf("OpenFile: %v, want ErrUnsafePermissions", err)
			}
			if !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not name %s and mode %s", err, tt.path, tt.wantText)
			}
			// A keyring already open refuses too once the mode changes.
			os.Chtimes(f.Path(), time.Now(), time.Now().Add(time.Second))
			if _, _, err := f.Wrap(context.Background(), dek(t)); !errors.Is(err, ErrUnsafePermissions) && tt.path == f.Path() {
				t.Errorf("open keyring after chmod: %v, want ErrUnsafePermissions", err)
			}
		})
	}
	open := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := InitFile(filepath.Join(open, "keyring.json")); !errors.Is(err, ErrUnsafePermissions) {
		t.Fatalf("InitFile in a 0755 directory: %v, want ErrUnsafePermissions", err)
	}
}

func TestTamperedFile(t *testing.T) {
	ctx := context.Background()
	f := newFile(t)
	if _, err := f.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(f.Path())
	if err != nil {
		t.Fatal(err)
	}
	edit := func(change func(st map[string]any)) []byte {
		var st map[string]any
		if err := json.Unmarshal(good, &st); err != nil {
			t.Fatal(err)
		}
		change(st)
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	key := func(st map[string]any, i int) map[string]any { return st["keys"].([]any)[i].(map[string]any) }
	flipB64 := func(s any) string {
		b, _ := base64.StdEncoding.DecodeString(s.(string))
		b[0] ^= 1
		return base64.StdEncoding.EncodeToString(b)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"not JSON", []byte("{")},
		{"empty", nil},
		{"unknown field", edit(func(st map[string]any) { st["extra"] = 1 })},
		{"wrong format", edit(func(st map[string]any) { st["format"] = "medgate-keyring/9" })},
		{"key material flipped", edit(func(st map[string]any) { key(st, 0)["key"] = flipB64(key(st, 0)["key"]) })},
		{"key material short", edit(func(st map[string]any) { key(st, 1)["key"] = "AAAA" })},
		{"IDs swapped", edit(func(st map[string]any) {
			key(st, 0)["id"], key(st, 1)["id"] = key(st, 1)["id"], key(st, 0)["id"]
		})},
		{"two current", edit(func(st map[string]any) { key(st, 0)["state"] = "current" })},
		{"no current", edit(func(st map[string]any) { key(st, 1)["state"] = "active" })},
		{"retired with material", edit(func(st map[string]any) { key(st, 0)["state"] = "retired" })},
		{"unknown state", edit(func(st map[string]any) { key(st, 0)["state"] = "dormant" })},
		{"duplicate ID", edit(func(st map[string]any) {
			ks := st["keys"].([]any)
			st["keys"] = append(ks, ks[0])
		})},
		{"ID with space", edit(func(st map[string]any) { key(st, 0)["id"] = "kek 1" })},
		{"derive secret flipped", edit(func(st map[string]any) {
			d := st["derive"].(map[string]any)
			d["key"] = flipB64(d["key"])
		})},
		{"derive secret missing", edit(func(st map[string]any) { delete(st, "derive") })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(privateDir(t), "keyring.json")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := OpenFile(path); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("OpenFile: %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestUnwrapRejects(t *testing.T) {
	ctx := context.Background()
	f := newFile(t)
	d := dek(t)
	oldID, w, err := f.Wrap(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	rot, err := f.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		c := bytes.Clone(w)
		c[i] ^= 1
		return c
	}
	tests := []struct {
		name    string
		id      string
		wrapped []byte
	}{
		{"format byte", oldID, flip(0)},
		{"nonce", oldID, flip(1)},
		{"ciphertext", oldID, flip(20)},
		{"tag", oldID, flip(len(w) - 1)},
		{"short", oldID, w[:len(w)-1]},
		{"long", oldID, append(bytes.Clone(w), 0)},
		{"empty", oldID, nil},
		{"other key's ID", rot.ID, w},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.Unwrap(ctx, tt.id, tt.wrapped); !errors.Is(err, ErrUnwrap) {
				t.Fatalf("got %v, want ErrUnwrap", err)
			}
		})
	}
	if _, _, err := f.Wrap(ctx, d[:16]); err == nil {
		t.Fatal("Wrap accepted a 16-byte data key")
	}
}

func TestDerive(t *testing.T) {
	ctx := context.Background()
	f := newFile(t)
	a, err := f.Derive("pseudonym/v1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.Derive("dateshift/v1")
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != DataKeySize || bytes.Equal(a, b) {
		t.Fatal("labels must yield distinct 32-byte keys")
	}
	if _, err := f.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	g, err := OpenFile(f.Path())
	if err != nil {
		t.Fatal(err)
	}
	again, err := g.Derive("pseudonym/v1")
	if err != nil || !bytes.Equal(again, a) {
		t.Fatalf("derived key changed after rotate and reopen: %v", err)
	}
	if other, _ := newFile(t).Derive("pseudonym/v1"); bytes.Equal(other, a) {
		t.Fatal("two keyrings derive the same key")
	}
	if _, err := f.Derive(""); err == nil {
		t.Fatal("empty label accepted")
	}
}

func TestFileConcurrent(t *testing.T) {
	ctx := context.Background()
	f := newFile(t)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 4 {
		wg.Go(func() {
			for range 20 {
				d := make([]byte, DataKeySize)
				id, w, err := f.Wrap(ctx, d)
				if err == nil {
					_, err = f.Unwrap(ctx, id, w)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 5 {
			if _, err := f.Rotate(ctx); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := states(t, f); len(got) != 6 {
		t.Fatalf("%d keys after 5 rotations, want 6", len(got))
	}
}

func TestNewDataKey(t *testing.T) {
	a, b := dek(t), dek(t)
	if len(a) != DataKeySize || bytes.Equal(a, b) {
		t.Fatal("NewDataKey must return distinct 32-byte keys")
	}
}

func TestContextCanceled(t *testing.T) {
	f := newFile(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := f.Wrap(ctx, dek(t)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wrap with canceled context: %v", err)
	}
}
