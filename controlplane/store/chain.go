package store

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"time"
)

const (
	entryDomain      = "medgate/store/entry/v1\x00"
	checkpointDomain = "medgate/store/checkpoint/v1\x00"
)

// HashSize is the size of Entry.Hash and Entry.Prev.
const HashSize = sha256.Size

var zeroHash = make([]byte, HashSize)

// EntryHash computes Entry.Hash: SHA-256 over a domain string followed by
// Index (8 bytes big-endian), Received as Unix microseconds (8 bytes),
// Source, Seq (8 bytes), Record and Prev, where each variable-length field
// is preceded by its length as 8 bytes big-endian. No two different tuples
// share an encoding.
func EntryHash(e *Entry) []byte {
	h := sha256.New()
	writeEntryHash(h, e)
	return h.Sum(nil)
}

func writeEntryHash(h hash.Hash, e *Entry) {
	var b [8]byte
	u64 := func(v uint64) {
		binary.BigEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	h.Write([]byte(entryDomain))
	u64(e.Index)
	u64(uint64(e.Received.UnixMicro()))
	u64(uint64(len(e.Source)))
	h.Write([]byte(e.Source))
	u64(e.Seq)
	u64(uint64(len(e.Record)))
	h.Write(e.Record)
	u64(uint64(len(e.Prev)))
	h.Write(e.Prev)
}

// CheckpointMessage is the byte string a checkpoint's signature covers: a
// domain string, Index (8 bytes big-endian), the length of Hash (8 bytes)
// and Hash, and Time as Unix microseconds (8 bytes).
func CheckpointMessage(index uint64, hash []byte, t time.Time) []byte {
	m := make([]byte, 0, len(checkpointDomain)+8+8+len(hash)+8)
	m = append(m, checkpointDomain...)
	m = binary.BigEndian.AppendUint64(m, index)
	m = binary.BigEndian.AppendUint64(m, uint64(len(hash)))
	m = append(m, hash...)
	m = binary.BigEndian.AppendUint64(m, uint64(t.UnixMicro()))
	return m
}

// signCheckpoint signs the head (index, hash) at t.
func signCheckpoint(key ed25519.PrivateKey, index uint64, hash []byte, t time.Time) Checkpoint {
	return Checkpoint{
		Index:     index,
		Hash:      append([]byte(nil), hash...),
		Time:      t,
		PublicKey: PublicKey(key),
		Signature: ed25519.Sign(key, CheckpointMessage(index, hash, t)),
	}
}

// VerifyCheckpoint reports whether c's signature verifies under pub.
func VerifyCheckpoint(c Checkpoint, pub ed25519.PublicKey) bool {
	if len(pub) != ed25519.PublicKeySize || len(c.Signature) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(pub, CheckpointMessage(c.Index, c.Hash, c.Time), c.Signature)
}

// PublicKey returns the public half of an Ed25519 signer.
func PublicKey(signer ed25519.PrivateKey) ed25519.PublicKey {
	if len(signer) != ed25519.PrivateKeySize {
		return nil
	}
	return signer.Public().(ed25519.PublicKey)
}

// chainer extends a chain from its head.
type chainer struct {
	index uint64
	hash  []byte
	h     hash.Hash
}

func newChainer(index uint64, head []byte) *chainer {
	if head == nil {
		head = zeroHash
	}
	return &chainer{index: index, hash: append([]byte(nil), head...), h: sha256.New()}
}

// next appends ev at received and returns the new entry.
func (c *chainer) next(ev Event, received time.Time) Entry {
	e := Entry{Index: c.index + 1, Received: received, Event: ev, Prev: c.hash}
	c.h.Reset()
	writeEntryHash(c.h, &e)
	e.Hash = c.h.Sum(nil)
	c.index, c.hash = e.Index, e.Hash
	return e
}

// dedup drops the events at or below their source's high-water mark,
// raising the marks in hw as it goes. It reports the events to store.
func dedup(events []Event, hw func(string) uint64, set func(string, uint64)) []Event {
	out := make([]Event, 0, len(events))
	for _, e := range events {
		if e.Seq <= hw(e.Source) {
			continue
		}
		set(e.Source, e.Seq)
		out = append(out, e)
	}
	return out
}
