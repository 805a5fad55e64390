package store

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// Event is one access event as a sidecar sent it.
type Event struct {
	Source string          // SPIFFE ID of the sending sidecar, taken from its mTLS certificate by the server
	Seq    uint64          // the sidecar's sequence number: from 1, increasing per Source (gaps allowed)
	Record json.RawMessage // the access event, a JSON object, stored byte for byte
}

// Entry is an event as stored, chained by hash.
type Entry struct {
	Index    uint64    // position in the chain, from 1, no gaps
	Received time.Time // when committed, UTC, microsecond precision
	Event
	Prev []byte // Hash of entry Index-1 (32 zero bytes for the first)
	Hash []byte // SHA-256 over the canonical encoding of (Index, Received, Source, Seq, Record, Prev); see EntryHash
}

// Filter selects entries for Query and Scan. Every non-empty field must match.
type Filter struct {
	Source       string // SPIFFE ID of the sidecar that sent the event
	Peer         string // "peer_id"
	Route        string // "route"
	Verdict      string // "verdict"
	Jurisdiction string // "local_jurisdiction" or "peer_jurisdiction"
	StudyUID     string // "object.study_uid"
	Patient      string // "object.patient", the keyed pseudonym token
	// Since (inclusive) and Until (exclusive) bound the event's own "time",
	// compared at microsecond precision. Zero is unbounded. When either is
	// set, events without a valid RFC 3339 "time" do not match.
	Since, Until time.Time
	Limit        int // at most this many entries, lowest Index first; 0 is no limit
}

// PolicyVersion is one applied (or rolled back to) set of policy documents.
type PolicyVersion struct {
	Version   string     // content hash of the documents (computed by the caller)
	Documents []Document // the policy source as applied
	Author    string     // SPIFFE ID of the admin who applied it
	Time      time.Time  // zero: the store's clock at PutPolicy
	Action    string     // "apply" or "rollback"
	Comment   string     // e.g. "rollback to 3f2a..."
}

// Document is one policy source file.
type Document struct {
	Name string
	YAML []byte
}

// NodeStatus is what the control plane last knew of one sidecar.
type NodeStatus struct {
	Node       string // sidecar SPIFFE ID
	Replica    string // which control-plane replica it is connected to
	Connected  bool
	Acked      string    // last ACKed policy version
	Nacked     string    // last NACKed version, "" if none since the last ACK
	NackReason string    // why it was NACKed
	Updated    time.Time // zero: the store's clock at PutStatus
}

// Checkpoint is a signed statement that the chain had Hash at Index at Time.
type Checkpoint struct {
	Index     uint64
	Hash      []byte
	Time      time.Time
	PublicKey ed25519.PublicKey // the key that signed it, as recorded by the writer
	Signature []byte            // Ed25519 over CheckpointMessage(Index, Hash, Time)
}

// Store is the control plane's durable state: the chained access events,
// their signed checkpoints, the policy history and the sidecars' status.
// Implementations are safe for concurrent use. A store opened without a
// signer is read-only: its write methods return ErrReadOnly.
type Store interface {
	// Append commits events durably (fsync or transaction commit) and only
	// then returns. It is idempotent: an event whose Seq is at or below the
	// high-water mark of its Source is taken as already stored and skipped,
	// so it is never stored twice, also across restarts and across replicas
	// sharing a PostgreSQL database. Seq must therefore increase per Source;
	// a late event below the mark is dropped as a duplicate. When Append
	// returns nil, every event of the batch is stored (now or earlier) and
	// the sender may be acknowledged up to the batch's highest Seq per
	// Source. An invalid event (empty Source, Seq 0, a Record that is not a
	// JSON object) fails the whole batch with ErrInvalidEvent and stores
	// nothing.
	Append(ctx context.Context, events []Event) error
	// HighWater is the highest Seq stored for source (0 if none).
	HighWater(ctx context.Context, source string) (uint64, error)
	// Query returns the entries matching f, lowest Index first.
	Query(ctx context.Context, f Filter) ([]Entry, error)
	// Scan calls fn for each entry matching f, lowest Index first, without
	// holding them all in memory. An error from fn stops the scan and is
	// returned. Unreadable stored data is skipped and reported at the end
	// as a *CorruptError.
	Scan(ctx context.Context, f Filter, fn func(Entry) error) error
	// Checkpoint signs the durable chain head (Index, Hash, time) with the
	// store's Ed25519 key and stores it.
	Checkpoint(ctx context.Context) error
	// Checkpoints lists the stored checkpoints, oldest first.
	Checkpoints(ctx context.Context) ([]Checkpoint, error)
	// PutPolicy appends v to the policy history.
	PutPolicy(ctx context.Context, v PolicyVersion) error
	// Policies is the policy history, oldest first; the last is current.
	Policies(ctx context.Context) ([]PolicyVersion, error)
	// CurrentPolicy is the last entry of the policy history, without
	// reading the rest; ok is false when the history is empty.
	CurrentPolicy(ctx context.Context) (v PolicyVersion, ok bool, err error)
	// PutStatus records s, replacing the previous status of s.Node.
	PutStatus(ctx context.Context, s NodeStatus) error
	// Statuses lists the last status of every node, ordered by Node.
	Statuses(ctx context.Context) ([]NodeStatus, error)
	// Close checkpoints the chain if it grew since the last checkpoint (when
	// writable) and releases the store. It is safe to call more than once.
	Close() error
}

// Errors callers branch on.
var (
	ErrReadOnly     = errors.New("store: opened read-only (no signer)")
	ErrClosed       = errors.New("store: closed")
	ErrLocked       = errors.New("store: directory is locked by another writer")
	ErrInvalidEvent = errors.New("store: invalid event")
	ErrCorrupt      = errors.New("store: corrupt data")
)

// CorruptError reports stored data that could not be read. It matches
// ErrCorrupt with errors.Is.
type CorruptError struct {
	File    string   // file name (embedded store) or table (PostgreSQL)
	Regions []Region // unreadable byte ranges, in file order
}

// Region is a byte range of a file.
type Region struct{ Offset, Length int64 }

func (e *CorruptError) Error() string {
	if len(e.Regions) == 0 {
		return fmt.Sprintf("store: %s: corrupt", e.File)
	}
	return fmt.Sprintf("store: %s: %d unreadable region(s), first at offset %d (%d bytes)",
		e.File, len(e.Regions), e.Regions[0].Offset, e.Regions[0].Length)
}

func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// DefaultCheckpointEvery is Config.CheckpointEvery's default.
const DefaultCheckpointEvery = 10000

// Limits on what Append accepts.
const (
	MaxRecordSize = 1 << 20 // bytes of one Record
	MaxSourceSize = 2048    // bytes of one Source
)

// Config holds the plain settings of a store.
type Config struct {
	// URL is "file:/path/dir", a bare directory path (the embedded store)
	// or "postgres://..." / "postgresql://..." (a pgx connection string).
	URL string
	// CheckpointEvery signs a checkpoint each time the chain crosses a
	// multiple of this many entries. Zero is DefaultCheckpointEvery;
	// negative disables periodic checkpoints (Close and Checkpoint still sign).
	CheckpointEvery int
	// MaxConns bounds the PostgreSQL connections of this store. Zero is 4.
	MaxConns int
}

// Deps holds a store's collaborators.
type Deps struct {
	// Signer signs checkpoints. Nil opens the store read-only.
	Signer ed25519.PrivateKey
	// Logger receives warnings such as a torn tail truncated on open. Nil
	// is slog.Default(), so such a warning is never silently dropped.
	Logger *slog.Logger
	// Now is the clock for Received and default times. Nil is time.Now.
	Now func() time.Time
}

// Open opens url as a store with the default Config; see OpenWith.
// signer signs checkpoints; it may be nil for read-only use (audit verify
// and query).
func Open(ctx context.Context, url string, signer ed25519.PrivateKey) (Store, error) {
	return OpenWith(ctx, Config{URL: url}, Deps{Signer: signer})
}

// OpenWith opens cfg.URL: "file:/path/dir" or a bare path as the embedded
// store (created if missing when writable), "postgres://..." as PostgreSQL
// (tables created if missing when writable). The caller closes the store.
func OpenWith(ctx context.Context, cfg Config, deps Deps) (Store, error) {
	if deps.Signer != nil && len(deps.Signer) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("store: signer has %d bytes, want an Ed25519 private key of %d", len(deps.Signer), ed25519.PrivateKeySize)
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if cfg.CheckpointEvery == 0 {
		cfg.CheckpointEvery = DefaultCheckpointEvery
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 4
	}
	u := cfg.URL
	switch {
	case strings.HasPrefix(u, "postgres://"), strings.HasPrefix(u, "postgresql://"):
		return openPostgres(ctx, cfg, deps)
	case strings.HasPrefix(u, "file://"):
		return openDir(strings.TrimPrefix(u, "file://"), cfg, deps)
	case strings.HasPrefix(u, "file:"):
		return openDir(strings.TrimPrefix(u, "file:"), cfg, deps)
	case u == "":
		return nil, errors.New("store: empty URL")
	case strings.Contains(u, "://"):
		return nil, fmt.Errorf("store: unsupported URL scheme in %q (want file: or postgres://)", schemeOf(u))
	default:
		return openDir(u, cfg, deps)
	}
}

func schemeOf(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		return u[:i]
	}
	return u
}

// now returns the clock's time in UTC at the precision the stores keep.
func now(deps Deps) time.Time { return deps.Now().UTC().Truncate(time.Microsecond) }

// validate checks one event of a batch and, if withFields, returns its
// filter fields. The error names the position, the source and the sequence
// number, never the record's content.
func validate(i int, e Event, withFields bool) (fields, error) {
	bad := func(reason string) (fields, error) {
		return fields{}, fmt.Errorf("%w: event %d of batch (source %q, seq %d): %s", ErrInvalidEvent, i, truncate(e.Source, 128), e.Seq, reason)
	}
	switch {
	case e.Source == "":
		return bad("empty source")
	case len(e.Source) > MaxSourceSize:
		return bad(fmt.Sprintf("source longer than %d bytes", MaxSourceSize))
	case !utf8.ValidString(e.Source) || strings.ContainsRune(e.Source, 0):
		return bad("source is not valid UTF-8 text")
	case e.Seq == 0:
		return bad("seq 0 (sequence numbers start at 1)")
	case e.Seq > math.MaxInt64:
		return bad("seq above 2^63-1")
	case len(e.Record) > MaxRecordSize:
		return bad(fmt.Sprintf("record of %d bytes is larger than %d", len(e.Record), MaxRecordSize))
	}
	if !withFields {
		// The same acceptance as extract, without decoding.
		if err := checkObject(e.Record); err != nil {
			return bad(err.Error())
		}
		return fields{}, nil
	}
	f, err := extract(e.Record)
	if err != nil {
		return bad(err.Error())
	}
	return f, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// fields are the parts of a record that filters look at.
type fields struct {
	Time         time.Time // zero if absent or not RFC 3339
	Peer         string
	Route        string
	Verdict      string
	LocalJur     string
	PeerJur      string
	StudyUID     string
	Patient      string
	hasValidTime bool
}

// lenientString takes a JSON string and ignores any other JSON value, so a
// sidecar's odd field never makes its whole spool undeliverable.
type lenientString string

func (s *lenientString) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var v string
		if json.Unmarshal(b, &v) == nil {
			*s = lenientString(v)
		}
	}
	return nil
}

type lenientObject struct {
	Patient  lenientString `json:"patient"`
	StudyUID lenientString `json:"study_uid"`
}

func (o *lenientObject) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '{' {
		var v struct {
			Patient  lenientString `json:"patient"`
			StudyUID lenientString `json:"study_uid"`
		}
		if json.Unmarshal(b, &v) == nil {
			*o = lenientObject(v)
		}
	}
	return nil
}

type recordShape struct {
	Time     lenientString `json:"time"`
	Peer     lenientString `json:"peer_id"`
	Route    lenientString `json:"route"`
	Verdict  lenientString `json:"verdict"`
	LocalJur lenientString `json:"local_jurisdiction"`
	PeerJur  lenientString `json:"peer_jurisdiction"`
	Object   lenientObject `json:"object"`
}

var errNotObject = errors.New("record is not a JSON object")

func startsObject(record []byte) bool {
	i := 0
	for i < len(record) && (record[i] == ' ' || record[i] == '\t' || record[i] == '\n' || record[i] == '\r') {
		i++
	}
	return i < len(record) && record[i] == '{'
}

// checkObject checks that record is one JSON object.
func checkObject(record []byte) error {
	if !startsObject(record) {
		return errNotObject
	}
	if !json.Valid(record) {
		return errNotJSON
	}
	return nil
}

var errNotJSON = errors.New("record is not valid JSON")

// extract checks that record is one JSON object and returns its filter fields.
func extract(record []byte) (fields, error) {
	if !startsObject(record) {
		return fields{}, errNotObject
	}
	var r recordShape
	if err := json.Unmarshal(record, &r); err != nil {
		return fields{}, errNotJSON
	}
	f := fields{
		Peer:     text(r.Peer),
		Route:    text(r.Route),
		Verdict:  text(r.Verdict),
		LocalJur: text(r.LocalJur),
		PeerJur:  text(r.PeerJur),
		StudyUID: text(r.Object.StudyUID),
		Patient:  text(r.Object.Patient),
	}
	if r.Time != "" {
		if t, err := time.Parse(time.RFC3339Nano, string(r.Time)); err == nil {
			f.Time = t.UTC().Truncate(time.Microsecond)
			f.hasValidTime = true
		}
	}
	return f, nil
}

// text makes a decoded JSON string storable as PostgreSQL text, which
// cannot hold NUL; both backends filter on the same value.
func text(s lenientString) string {
	return strings.ReplaceAll(string(s), "\x00", "\uFFFD")
}

// match reports whether an entry with these source and fields passes f.
func (f *Filter) match(source string, r *fields) bool {
	switch {
	case f.Source != "" && source != f.Source,
		f.Peer != "" && r.Peer != f.Peer,
		f.Route != "" && r.Route != f.Route,
		f.Verdict != "" && r.Verdict != f.Verdict,
		f.Jurisdiction != "" && r.LocalJur != f.Jurisdiction && r.PeerJur != f.Jurisdiction,
		f.StudyUID != "" && r.StudyUID != f.StudyUID,
		f.Patient != "" && r.Patient != f.Patient:
		return false
	}
	if !f.Since.IsZero() || !f.Until.IsZero() {
		if !r.hasValidTime {
			return false
		}
		if !f.Since.IsZero() && r.Time.Before(f.Since.UTC().Truncate(time.Microsecond)) {
			return false
		}
		if !f.Until.IsZero() && !r.Time.Before(f.Until.UTC().Truncate(time.Microsecond)) {
			return false
		}
	}
	return true
}

// needsRecord reports whether matching f looks inside the record.
func (f *Filter) needsRecord() bool {
	return f.Peer != "" || f.Route != "" || f.Verdict != "" || f.Jurisdiction != "" ||
		f.StudyUID != "" || f.Patient != "" || !f.Since.IsZero() || !f.Until.IsZero()
}

func validatePolicy(v PolicyVersion) error {
	switch {
	case v.Version == "":
		return errors.New("store: policy version: empty Version")
	case v.Action != "apply" && v.Action != "rollback":
		return fmt.Errorf("store: policy version %s: Action %q (want apply or rollback)", v.Version, v.Action)
	}
	return nil
}

func validateStatus(s NodeStatus) error {
	if s.Node == "" {
		return errors.New("store: node status: empty Node")
	}
	return nil
}

// collect runs a scan into a slice, for Query.
func collect(ctx context.Context, s Store, f Filter) ([]Entry, error) {
	var out []Entry
	err := s.Scan(ctx, f, func(e Entry) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
