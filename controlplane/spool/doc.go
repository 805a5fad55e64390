// Package spool keeps the sidecar's access events on local disk, encrypted,
// from the moment they happen until the control plane has acknowledged
// them, so that none is lost across crashes of the sidecar and drops of its
// link.
//
// A Spool is an append-only log of records numbered 1, 2, 3, ... (the
// Seq). Append stores a record and returns once it is durable. One sender
// goroutine reads what is unacknowledged with Pending, blocks on Wait when
// there is nothing new, and calls Ack with the highest seq the control plane
// has stored; after a reconnect it reads again from the last Ack and
// resends. A record can therefore be sent twice, never with two seqs: seqs
// are never handed out again, not even after every record was acknowledged
// and deleted, and the control plane drops duplicates by seq.
//
// # On disk
//
//	dir/                   mode 0700
//	  lock                 flock held while the spool is open: one process at a time
//	  state                ack watermark and the next seq, replaced atomically
//	  0000000000000001.seg segments, named by the seq of their first record (hex)
//	  00000000000033a1.seg
//
// Open refuses a directory, or a spool file in it, that group or others can
// access, and leaves files that are not the spool's alone. Temporary files
// (".tmp-*") are what a crash left of a write that never took effect, and
// are removed.
//
// A segment holds consecutive records. Append writes only to the newest;
// when it reaches Options.SegmentBytes a new one begins. Ack deletes
// segments whose records are all acknowledged. Each segment has its own
// random AES-256 data key, wrapped by the keyring (crypto/keys) and stored
// in its header with the ID of the wrapping KEK. The header (big-endian
// integers):
//
//	offset  size  field
//	0       4     magic "MGSP"
//	4       1     format version, 1
//	5       8     seq of the first record; the file name repeats it
//	13      1+n   KEK ID: length, then printable ASCII
//	        2+n   wrapped data key: length, then bytes
//	        28    AES-256-GCM under the data key of no plaintext, with
//	              "medgate spool v1 segment header\x00" and the bytes
//	              above as associated data: random nonce, tag
//
// Then the records, each sealed on its own:
//
//	offset  size  field
//	0       4     length L of the sealed part
//	4       8     seq
//	12      4     CRC-32C of bytes 0-11
//	16      L     AES-256-GCM under the data key: random 12-byte nonce,
//	              ciphertext of (append time, 8 bytes, Unix ns; data), tag
//
// A record's associated data is SHA-256 of its segment's whole header
// followed by the record's first 16 bytes, so a record cannot be altered,
// renumbered, moved within its segment or into another one without failing
// authentication; the records of a segment must also hold consecutive
// seqs, so one cannot be removed from the middle. Random 96-bit nonces
// (crypto/cipher.NewGCMWithRandomNonce, accepted in FIPS 140-3 mode) are
// far from their limit: a data key seals at most one segment's records.
// The CRC only tells a torn write from damage; it is not a defence.
//
// The state file holds the ack watermark and a floor for the next seq, with
// a CRC-32C. Before a segment takes its first record the floor is raised
// past the most records the segment can hold, so that no seq is handed out
// twice even if the newest segment is later cut or moved aside; Close
// lowers it to the next seq. After a crash seqs therefore jump ahead, as
// they skip what DropOldest deleted and a torn tail held: gaps are normal
// and are not loss.
//
// Seqs and the times of writes are visible on disk; event contents and
// their times are not.
//
// # Crashes
//
// With Options.Sync at its default, SyncCommit, Append returns after the
// record is fsynced; Appends that arrive while an fsync runs share the
// next one (group commit). Pending only ever returns durable records, so a
// record the control plane has seen cannot vanish in a crash and its seq
// be reused. A new segment is written under a temporary name, synced and
// renamed into place, so a segment file always has a whole header. The
// state file is replaced atomically, and written (with the next seq)
// before any segment is deleted.
//
// A crash can leave a torn tail in the newest segment: the file ends
// inside a record, or the bad record and everything after it are zeros
// (blocks a file system allocated but never wrote), or the last record
// fails authentication. Open cuts such a tail off; the records in it were
// never reported as appended. Anything else that fails its checks, in any
// segment, is damage or tampering: Open fails with a *CorruptError naming
// the file, the offset and the seq, and the operator chooses what to lose,
// either truncating the file at that offset (keeping the records before
// it) or moving the file out of the directory (losing all of it). Open
// never skips records by itself. A segment whose KEK was retired, or is
// missing from the keyring, fails Open with a *KeyError naming the KEK.
//
// # Full
//
// The spool is full when an Append would make the segment files exceed
// Options.MaxBytes (acknowledged records still count until their segment
// is deleted; the newest segment is deleted only once a newer one exists).
// Append then follows its FullMode: FailClosed returns ErrFull and stores
// nothing, for callers that refuse traffic they cannot record; DropOldest
// deletes the oldest segments, acknowledged or not, until the record fits,
// and counts the unacknowledged records lost in Dropped.
package spool
