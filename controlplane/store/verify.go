package store

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
)

// ProblemKind classifies what Verify found. The values are stable and may
// be used as metric labels and audit fields.
type ProblemKind string

const (
	// ProblemHash: an entry's stored hash does not match its content (the
	// entry was edited).
	ProblemHash ProblemKind = "hash_mismatch"
	// ProblemPrev: an entry's Prev is not the hash of the entry before it
	// (an entry before it was edited with its hash recomputed, inserted or
	// deleted).
	ProblemPrev ProblemKind = "prev_mismatch"
	// ProblemGap: indexes are missing (entries deleted).
	ProblemGap ProblemKind = "index_gap"
	// ProblemOrder: an index repeats or goes backwards (entries inserted).
	ProblemOrder ProblemKind = "index_out_of_order"
	// ProblemCorrupt: stored bytes could not be read at all.
	ProblemCorrupt ProblemKind = "corrupt_data"
	// ProblemSignature: a checkpoint's signature does not verify under the
	// given public key (forged, or signed by another key).
	ProblemSignature ProblemKind = "bad_checkpoint_signature"
	// ProblemCheckpoint: a validly signed checkpoint names a hash that the
	// entry at its index no longer has (the chain was rewritten).
	ProblemCheckpoint ProblemKind = "checkpoint_mismatch"
	// ProblemTruncated: a validly signed checkpoint is beyond the end of the
	// chain, or its entry is gone (the tail was deleted).
	ProblemTruncated ProblemKind = "truncated_after_checkpoint"
)

// Problem is one finding of Verify.
type Problem struct {
	Kind   ProblemKind
	Index  uint64 // the entry or checkpoint index concerned; 0 if none
	Detail string // for people; holds no record content
}

func (p Problem) String() string {
	return fmt.Sprintf("%s at index %d: %s", p.Kind, p.Index, p.Detail)
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	Entries     uint64    // entries read
	Head        uint64    // index of the last entry read
	HeadHash    []byte    // its stored hash
	Checkpoints int       // checkpoints read
	Signed      uint64    // highest index covered by a valid checkpoint that matches the chain
	Problems    []Problem // everything wrong, in the order found
}

// OK reports whether Verify found no problem.
func (r *VerifyReport) OK() bool { return len(r.Problems) == 0 }

// Unsigned is the number of entries after the last valid checkpoint: they
// are chained but could be rewritten or dropped without a trace by whoever
// can write the store.
func (r *VerifyReport) Unsigned() uint64 {
	if r.Head < r.Signed {
		return 0
	}
	return r.Head - r.Signed
}

// Verify walks the whole chain and the checkpoints and reports every
// problem: an edited entry (hash mismatch), an inserted or deleted entry
// (index gap or repeat, prev mismatch), a checkpoint whose signature does
// not verify under pub or that no longer matches the chain (truncation
// after a checkpoint is a deleted tail). It does not stop at the first
// problem. The error is for failing to read the store at all; unreadable
// stretches are reported as problems.
//
// Entries appended after the last checkpoint carry no signature: someone
// able to write the store can rewrite or truncate them consistently.
// Checkpoint often enough, and keep copies of checkpoints elsewhere, to
// bound that window.
func Verify(ctx context.Context, s Store, pub ed25519.PublicKey) (VerifyReport, error) {
	var rep VerifyReport
	if len(pub) != ed25519.PublicKeySize {
		return rep, fmt.Errorf("store: verify: public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	cps, err := s.Checkpoints(ctx)
	var ce *CorruptError
	if errors.As(err, &ce) {
		rep.Problems = append(rep.Problems, corruptProblems(ce)...)
	} else if err != nil {
		return rep, fmt.Errorf("store: verify: read checkpoints: %w", err)
	}
	rep.Checkpoints = len(cps)
	// The stored hashes at checkpointed indexes, filled in during the walk.
	want := make(map[uint64][]byte, len(cps))
	for _, c := range cps {
		want[c.Index] = nil
	}

	expect := uint64(1)
	prev := zeroHash // entry 1 chains to the zero hash
	h := sha256.New()
	err = s.Scan(ctx, Filter{}, func(e Entry) error {
		rep.Entries++
		switch {
		case e.Index > expect:
			detail := fmt.Sprintf("entry %d is missing", expect)
			if e.Index-expect > 1 {
				detail = fmt.Sprintf("entries %d to %d are missing", expect, e.Index-1)
			}
			rep.Problems = append(rep.Problems, Problem{ProblemGap, expect, detail})
		case e.Index < expect:
			rep.Problems = append(rep.Problems, Problem{ProblemOrder, e.Index,
				fmt.Sprintf("entry %d follows entry %d", e.Index, expect-1)})
		}
		h.Reset()
		writeEntryHash(h, &e)
		if !bytes.Equal(h.Sum(nil), e.Hash) {
			rep.Problems = append(rep.Problems, Problem{ProblemHash, e.Index,
				fmt.Sprintf("stored hash %x does not match the entry's content (source %q, seq %d)", short(e.Hash), e.Source, e.Seq)})
		}
		if !bytes.Equal(e.Prev, prev) {
			rep.Problems = append(rep.Problems, Problem{ProblemPrev, e.Index,
				fmt.Sprintf("prev %x is not the hash %x of the entry read before it", short(e.Prev), short(prev))})
		}
		if _, ok := want[e.Index]; ok && want[e.Index] == nil {
			want[e.Index] = e.Hash
		}
		prev = e.Hash
		rep.Head, rep.HeadHash = e.Index, e.Hash
		expect = max(expect, e.Index+1)
		return nil
	})
	if errors.As(err, &ce) {
		rep.Problems = append(rep.Problems, corruptProblems(ce)...)
	} else if err != nil {
		return rep, fmt.Errorf("store: verify: read entries: %w", err)
	}

	for i, c := range cps {
		if !VerifyCheckpoint(c, pub) {
			rep.Problems = append(rep.Problems, Problem{ProblemSignature, c.Index,
				fmt.Sprintf("checkpoint %d (of %s) does not verify under the given public key", i+1, c.Time.Format("2006-01-02T15:04:05Z07:00"))})
			continue
		}
		var got []byte
		switch {
		case c.Index == 0:
			got = zeroHash
		case c.Index > rep.Head:
			rep.Problems = append(rep.Problems, Problem{ProblemTruncated, c.Index,
				fmt.Sprintf("checkpoint %d signs entry %d but the chain ends at %d", i+1, c.Index, rep.Head)})
			continue
		default:
			got = want[c.Index]
		}
		if got == nil {
			rep.Problems = append(rep.Problems, Problem{ProblemTruncated, c.Index,
				fmt.Sprintf("checkpoint %d signs entry %d, which is missing", i+1, c.Index)})
			continue
		}
		if !bytes.Equal(got, c.Hash) {
			rep.Problems = append(rep.Problems, Problem{ProblemCheckpoint, c.Index,
				fmt.Sprintf("checkpoint %d signs hash %x but entry %d has %x", i+1, short(c.Hash), c.Index, short(got))})
			continue
		}
		rep.Signed = max(rep.Signed, c.Index)
	}
	return rep, nil
}

func corruptProblems(ce *CorruptError) []Problem {
	var out []Problem
	for _, r := range ce.Regions {
		out = append(out, Problem{ProblemCorrupt, 0,
			fmt.Sprintf("%s: %d bytes at offset %d are unreadable", ce.File, r.Length, r.Offset)})
	}
	if len(ce.Regions) == 0 {
		out = append(out, Problem{ProblemCorrupt, 0, ce.Error()})
	}
	return out
}

func short(b []byte) []byte {
	if len(b) > 8 {
		return b[:8]
	}
	return b
}
