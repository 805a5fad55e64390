//go:build pkcs11

package keys

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/pkcs11"
)

// PKCS11 keeps KEKs in a PKCS#11 token (an HSM, or SoftHSM2 for tests).
// Each KEK is a token AES-256 key object labelled with its key ID,
// sensitive and not extractable: the key material never leaves the token,
// which wraps and unwraps data keys with CKM_AES_GCM. The wrapped form is
// the same as File's: format byte 1, the 12-byte IV, the encrypted key and
// the 16-byte tag, with the key ID bound as associated data.
//
// Rotate generates a new key object; the current KEK is the newest one
// (key IDs sort by creation time). Retire destroys the key object and
// leaves a data object named after it, so later unwraps report
// ErrKeyRetired rather than ErrKeyUnavailable. Objects on the token whose
// labels are not medgate key IDs are left alone.
//
// One PKCS11 holds one logged-in session; its methods are safe for
// concurrent use and run one at a time. Open one per module per process,
// and Close it when done.
type PKCS11 struct {
	mu      sync.Mutex
	ctx     *pkcs11.Ctx
	session pkcs11.SessionHandle
	ownInit bool // this PKCS11 initialized the library and finalizes it
	closed  bool
	now     func() time.Time
}

var (
	_ Keyring = (*PKCS11)(nil)
	_ Manager = (*PKCS11)(nil)
)

const (
	keyIDPrefix    = "kek-"
	keyIDTimeLen   = len("20060102T150405.000Z")
	tombstoneApp   = "medgate retired key"
	gcmTagBits     = 128
	wrapNonceBytes = 12
)

// OpenPKCS11 loads the module, finds the token by label, opens a session
// and logs in as user.
func OpenPKCS11(cfg PKCS11Config) (*PKCS11, error) {
	pin, err := cfg.pin()
	if err != nil {
		return nil, err
	}
	ctx := pkcs11.New(cfg.Module)
	if ctx == nil {
		return nil, fmt.Errorf("keys: pkcs11: cannot load module %s", cfg.Module)
	}
	p := &PKCS11{ctx: ctx, now: time.Now, ownInit: true}
	if err := ctx.Initialize(); err != nil {
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			ctx.Destroy()
			return nil, fmt.Errorf("keys: pkcs11: initialize %s: %w", cfg.Module, err)
		}
		p.ownInit = false
	}
	slot, err := findToken(ctx, cfg.TokenLabel)
	if err == nil {
		p.session, err = ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			err = fmt.Errorf("keys: pkcs11: open session on token %q: %w", cfg.TokenLabel, err)
		}
	}
	if err == nil {
		if lerr := ctx.Login(p.session, pkcs11.CKU_USER, pin); lerr != nil && !errors.Is(lerr, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
			ctx.CloseSession(p.session)
			err = fmt.Errorf("keys: pkcs11: log in to token %q: %w", cfg.TokenLabel, lerr)
		}
	}
	if err != nil {
		p.finalize()
		return nil, err
	}
	return p, nil
}

func findToken(ctx *pkcs11.Ctx, label string) (uint, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("keys: pkcs11: list slots: %w", err)
	}
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err == nil && strings.TrimRight(ti.Label, " \x00") == label {
			return s, nil
		}
	}
	return 0, fmt.Errorf("keys: pkcs11: no token labelled %q", label)
}

// Close logs out, closes the session and unloads the module.
func (p *PKCS11) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.ctx.Logout(p.session)
	err := p.ctx.CloseSession(p.session)
	p.finalize()
	if err != nil {
		return fmt.Errorf("keys: pkcs11: close session: %w", err)
	}
	return nil
}

func (p *PKCS11) finalize() {
	if p.ownInit {
		p.ctx.Finalize()
	}
	p.ctx.Destroy()
}

// begin locks p and checks the context and that p is open.
func (p *PKCS11) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errors.New("keys: pkcs11: keyring closed")
	}
	return nil
}

// Wrap implements Keyring.
func (p *PKCS11) Wrap(ctx context.Context, dek []byte) (string, []byte, error) {
	if err := checkDEK(dek); err != nil {
		return "", nil, err
	}
	if err := p.begin(ctx); err != nil {
		return "", nil, err
	}
	defer p.mu.Unlock()
	ks, err := p.keys()
	if err != nil {
		return "", nil, err
	}
	if len(ks) == 0 {
		return "", nil, fmt.Errorf("%w: token holds no key-encryption key (rotate to create one)", ErrKeyUnavailable)
	}
	cur := ks[len(ks)-1]
	iv := make([]byte, wrapNonceBytes)
	rand.Read(iv)
	params := pkcs11.NewGCMParams(iv, []byte(wrapAD+cur.id), gcmTagBits)
	defer params.Free()
	if err := p.ctx.EncryptInit(p.session, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, cur.handle); err != nil {
		return "", nil, fmt.Errorf("keys: pkcs11: wrap under %s: %w", cur.id, err)
	}
	ct, err := p.ctx.Encrypt(p.session, dek)
	if err != nil {
		return "", nil, fmt.Errorf("keys: pkcs11: wrap under %s: %w", cur.id, err)
	}
	// Some modules choose the IV themselves; use the one they report.
	if got := params.IV(); len(got) == wrapNonceBytes {
		iv = got
	}
	out := make([]byte, 0, wrappedLen)
	out = append(out, wrapFormat)
	out = append(out, iv...)
	out = append(out, ct...)
	if len(out) != wrappedLen {
		return "", nil, fmt.Errorf("keys: pkcs11: wrap under %s: module returned %d bytes, want %d", cur.id, len(ct), wrappedLen-1-wrapNonceBytes)
	}
	return cur.id, out, nil
}

// Unwrap implements Keyring.
func (p *PKCS11) Unwrap(ctx context.Context, keyID string, wrapped []byte) ([]byte, error) {
	if err := p.begin(ctx); err != nil {
		return nil, err
	}
	defer p.mu.Unlock()
	h, err := p.find(keyID)
	if err != nil {
		return nil, err
	}
	if len(wrapped) != wrappedLen || wrapped[0] != wrapFormat {
		return nil, fmt.Errorf("%w: %d bytes, want %d in format %d", ErrUnwrap, len(wrapped), wrappedLen, wrapFormat)
	}
	params := pkcs11.NewGCMParams(slices.Clone(wrapped[1:1+wrapNonceBytes]), []byte(wrapAD+keyID), gcmTagBits)
	defer params.Free()
	if err := p.ctx.DecryptInit(p.session, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, h); err != nil {
		return nil, fmt.Errorf("keys: pkcs11: unwrap under %s: %w", keyID, err)
	}
	dek, err := p.ctx.Decrypt(p.session, wrapped[1+wrapNonceBytes:])
	if err != nil {
		// A tag mismatch is CKR_ENCRYPTED_DATA_INVALID by the standard;
		// SoftHSM2 reports it as CKR_GENERAL_ERROR.
		if errors.Is(err, pkcs11.Error(pkcs11.CKR_ENCRYPTED_DATA_INVALID)) ||
			errors.Is(err, pkcs11.Error(pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE)) ||
			errors.Is(err, pkcs11.Error(pkcs11.CKR_GENERAL_ERROR)) {
			return nil, fmt.Errorf("%w: under key %s (%v)", ErrUnwrap, keyID, err)
		}
		return nil, fmt.Errorf("keys: pkcs11: unwrap under %s: %w", keyID, err)
	}
	if len(dek) != DataKeySize {
		return nil, fmt.Errorf("%w: under key %s: %d bytes", ErrUnwrap, keyID, len(dek))
	}
	return dek, nil
}

// Rotate implements Manager. The new key's ID sorts after every existing
// one, so it is the newest and current.
func (p *PKCS11) Rotate(ctx context.Context) (KeyInfo, error) {
	if err := p.begin(ctx); err != nil {
		return KeyInfo{}, err
	}
	defer p.mu.Unlock()
	ks, err := p.keys()
	if err != nil {
		return KeyInfo{}, err
	}
	created := p.now().UTC().Truncate(time.Millisecond)
	if len(ks) > 0 && !created.After(ks[len(ks)-1].created) {
		created = ks[len(ks)-1].created.Add(time.Millisecond)
	}
	id := newKeyID(created)
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, DataKeySize),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, id),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte(id)),
	}
	if _, err := p.ctx.GenerateKey(p.session, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, tmpl); err != nil {
		return KeyInfo{}, fmt.Errorf("keys: pkcs11: generate key: %w", err)
	}
	return KeyInfo{ID: id, Created: created, State: StateCurrent}, nil
}

// List implements Manager.
func (p *PKCS11) List(ctx context.Context) ([]KeyInfo, error) {
	if err := p.begin(ctx); err != nil {
		return nil, err
	}
	defer p.mu.Unlock()
	ks, err := p.keys()
	if err != nil {
		return nil, err
	}
	var out []KeyInfo
	for i, k := range ks {
		st := StateActive
		if i == len(ks)-1 {
			st = StateCurrent
		}
		out = append(out, KeyInfo{ID: k.id, Created: k.created, State: st})
	}
	tombs, err := p.objects(pkcs11.CKO_DATA)
	if err != nil {
		return nil, err
	}
	for _, t := range tombs {
		info := KeyInfo{ID: t.id, Created: t.created, State: StateRetired}
		if v, err := p.ctx.GetAttributeValue(p.session, t.handle, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); err == nil && len(v) == 1 {
			info.Retired, _ = time.Parse(time.RFC3339Nano, string(v[0].Value))
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b KeyInfo) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Retire implements Manager: it destroys the key object. Retiring a
// retired key does nothing.
func (p *PKCS11) Retire(ctx context.Context, id string) error {
	if err := p.begin(ctx); err != nil {
		return err
	}
	defer p.mu.Unlock()
	ks, err := p.keys()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(ks, func(k tokenObject) bool { return k.id == id })
	if i < 0 {
		if _, err := p.find(id); errors.Is(err, ErrKeyRetired) {
			return nil
		}
		return fmt.Errorf("%w: no key %q", ErrKeyUnavailable, id)
	}
	if i == len(ks)-1 {
		return fmt.Errorf("%w: %s wraps new data keys; rotate, then retire it", ErrKeyCurrent, id)
	}
	// The tombstone first: if destroying fails, the key still works and a
	// second Retire finishes the job.
	tomb := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_APPLICATION, tombstoneApp),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, id),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, p.now().UTC().Format(time.RFC3339Nano)),
	}
	if _, err := p.ctx.CreateObject(p.session, tomb); err != nil {
		return fmt.Errorf("keys: pkcs11: record retirement of %s: %w", id, err)
	}
	if err := p.ctx.DestroyObject(p.session, ks[i].handle); err != nil {
		return fmt.Errorf("keys: pkcs11: destroy key %s: %w", id, err)
	}
	return nil
}

type tokenObject struct {
	id      string
	created time.Time
	handle  pkcs11.ObjectHandle
}

// keys returns the KEK objects on the token, oldest first.
func (p *PKCS11) keys() ([]tokenObject, error) {
	ks, err := p.objects(pkcs11.CKO_SECRET_KEY)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(ks, func(a, b tokenObject) int { return strings.Compare(a.id, b.id) })
	return ks, nil
}

// objects returns the token's objects of one class whose labels are
// medgate key IDs: KEKs (secret keys) or tombstones (data objects).
func (p *PKCS11) objects(class uint) ([]tokenObject, error) {
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class)}
	if class == pkcs11.CKO_DATA {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_APPLICATION, tombstoneApp))
	} else {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES))
	}
	handles, err := p.findObjects(tmpl)
	if err != nil {
		return nil, err
	}
	var out []tokenObject
	for _, h := range handles {
		attrs, err := p.ctx.GetAttributeValue(p.session, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil)})
		if err != nil || len(attrs) != 1 {
			continue
		}
		id := string(attrs[0].Value)
		created, ok := parseKeyID(id)
		if !ok {
			continue
		}
		out = append(out, tokenObject{id: id, created: created, handle: h})
	}
	return out, nil
}

func (p *PKCS11) findObjects(tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := p.ctx.FindObjectsInit(p.session, tmpl); err != nil {
		return nil, fmt.Errorf("keys: pkcs11: find objects: %w", err)
	}
	var all []pkcs11.ObjectHandle
	for {
		hs, _, err := p.ctx.FindObjects(p.session, 64)
		if err != nil {
			p.ctx.FindObjectsFinal(p.session)
			return nil, fmt.Errorf("keys: pkcs11: find objects: %w", err)
		}
		if len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	if err := p.ctx.FindObjectsFinal(p.session); err != nil {
		return nil, fmt.Errorf("keys: pkcs11: find objects: %w", err)
	}
	return all, nil
}

// find returns the handle of the KEK with the given ID.
func (p *PKCS11) find(id string) (pkcs11.ObjectHandle, error) {
	if _, ok := parseKeyID(id); !ok {
		return 0, fmt.Errorf("%w: %q is not a key ID", ErrKeyUnavailable, id)
	}
	hs, err := p.findObjects([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, id),
	})
	if err != nil {
		return 0, err
	}
	if len(hs) == 1 {
		return hs[0], nil
	}
	if len(hs) > 1 {
		return 0, fmt.Errorf("keys: pkcs11: %d keys labelled %s", len(hs), id)
	}
	tombs, err := p.findObjects([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
		pkcs11.NewAttribute(pkcs11.CKA_APPLICATION, tombstoneApp),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, id),
	})
	if err != nil {
		return 0, err
	}
	if len(tombs) > 0 {
		return 0, fmt.Errorf("%w: %s", ErrKeyRetired, id)
	}
	return 0, fmt.Errorf("%w: no key %q", ErrKeyUnavailable, id)
}

// parseKeyID returns the creation time in a key ID made by newKeyID.
func parseKeyID(id string) (time.Time, bool) {
	rest, ok := strings.CutPrefix(id, keyIDPrefix)
	if !ok || len(rest) < keyIDTimeLen+2 || rest[keyIDTimeLen] != '-' {
		return time.Time{}, false
	}
	t, err := time.Parse("20060102T150405.000Z", rest[:keyIDTimeLen])
	return t, err == nil
}
