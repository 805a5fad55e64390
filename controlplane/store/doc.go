// Package store keeps the control plane's durable state: the access events
// the sidecars send, signed checkpoints over them, the policy history and
// each sidecar's last known status. Open picks a backend from a URL: an
// embedded store in a directory (the default; pure Go, one writer) or
// PostgreSQL, which several control-plane replicas share so that any of
// them can serve any sidecar.
//
// # Chain
//
// Every stored event becomes an Entry with an Index (1, 2, 3... with no
// gaps), the time it was committed, and two hashes: Prev, the Hash of the
// entry before it (32 zero bytes for the first), and Hash, SHA-256 over an
// unambiguous encoding of Index, Received, Source, Seq, Record and Prev
// (see EntryHash). Editing, inserting or deleting an entry therefore breaks
// either its own hash or the next entry's Prev. Verify walks the chain and
// reports every break it finds, without stopping at the first.
//
// # Checkpoints
//
// A hash chain alone does not stop someone who can write the storage from
// rewriting the tail and recomputing the hashes, or from cutting the tail
// off. A checkpoint signs the chain head (Index, Hash, time) with the
// store's Ed25519 key; it is written each time the chain crosses a multiple
// of Config.CheckpointEvery entries, on Close and on Checkpoint. Verify
// checks each checkpoint's signature under the public key it is given and
// that the entry at its index still has the signed hash; a checkpoint past
// the end of the chain means the tail was deleted. Entries after the last
// checkpoint are chained but unsigned (VerifyReport.Unsigned). The signing
// key should live apart from the storage: whoever holds both can forge
// everything.
//
// # Idempotency
//
// Sidecars number their events per source and resend what was not
// acknowledged, so the same event may arrive twice, possibly at another
// replica after a reconnect. Append skips any event whose Seq is at or
// below its source's high-water mark (HighWater), and only chains the
// events it actually stores. The embedded store keeps the marks in memory,
// rebuilt on open; PostgreSQL computes them under the chain-head row lock
// that serializes all replicas' appends, with UNIQUE (source, seq) and ON
// CONFLICT DO NOTHING as a backstop.
//
// # Crashes
//
// Append returns only once its events are durable: the embedded store
// writes each group of concurrent Appends as one checksummed block and
// fsyncs once before any of them returns; PostgreSQL commits one
// transaction per Append. After a crash the embedded store's last block may
// be incomplete. Open (writable) detects that, truncates it, and logs a
// warning: those events were never acknowledged, and the sidecars resend
// them. Damage that is followed by valid blocks cannot come from a crash,
// so it is not truncated: a writable Open fails with ErrCorrupt, while a
// read-only Open can still read around it and Verify reports it.
//
// # Embedded layout
//
// The directory holds LOCK (flock'd by the single writer; a read-only Open,
// with a nil signer, needs no lock and may run beside the writer),
// events.log, checkpoints.log, policies.log and status.log. Node status is
// soft state and is written without fsync. Queries scan events.log; only
// the per-source high-water marks are kept in memory.
package store
