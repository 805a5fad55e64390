package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"
)

// On disk every file of the embedded store is a sequence of blocks:
//
//	magic [4]byte = 0x4d 0x47 0x42 0xb1
//	length uint32 big-endian, of payload, at most maxBlock
//	crc    uint32 big-endian, CRC-32C over length and payload
//	payload [length]byte: a kind byte, then the kind's records
//
// A block is written with one write and made durable with one fsync before
// the next block is written, so after a crash only the last block can be
// incomplete. The CRC catches accidents, not tampering: the hash chain and
// the signed checkpoints do that.

var blockMagic = [4]byte{0x4d, 0x47, 0x42, 0xb1}

const (
	blockHeader = 12
	maxBlock    = 64 << 20
)

// Payload kinds.
const (
	kindEntries    byte = 'E'
	kindCheckpoint byte = 'C'
	kindPolicy     byte = 'P'
	kindStatus     byte = 'S'
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendBlock frames payload as one block.
func appendBlock(dst, payload []byte) []byte {
	var h [blockHeader]byte
	copy(h[:4], blockMagic[:])
	binary.BigEndian.PutUint32(h[4:8], uint32(len(payload)))
	crc := crc32.Update(0, castagnoli, h[4:8])
	crc = crc32.Update(crc, castagnoli, payload)
	binary.BigEndian.PutUint32(h[8:12], crc)
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// frameInPlace fills in the header of b, whose first blockHeader bytes
// are room for it and the rest the payload.
func frameInPlace(b []byte) {
	h := b[:blockHeader]
	copy(h[:4], blockMagic[:])
	binary.BigEndian.PutUint32(h[4:8], uint32(len(b)-blockHeader))
	crc := crc32.Update(0, castagnoli, h[4:8])
	crc = crc32.Update(crc, castagnoli, b[blockHeader:])
	binary.BigEndian.PutUint32(h[8:12], crc)
}

// errBadBlock is an invalid block at a reader's current offset.
var errBadBlock = errors.New("invalid block")

// blockReader reads blocks from r between its offset and limit.
type blockReader struct {
	r     io.ReaderAt
	off   int64
	limit int64
}

// next returns the payload of the block at off and advances past it. It
// returns io.EOF at limit and errBadBlock (without advancing) when the bytes
// at off are not a whole valid block.
func (b *blockReader) next() ([]byte, error) {
	if b.off >= b.limit {
		return nil, io.EOF
	}
	p, n, err := readBlockAt(b.r, b.off, b.limit)
	if err != nil {
		return nil, err
	}
	b.off += n
	return p, nil
}

func readBlockAt(r io.ReaderAt, off, limit int64) ([]byte, int64, error) {
	if limit-off < blockHeader {
		return nil, 0, errBadBlock
	}
	var h [blockHeader]byte
	if _, err := r.ReadAt(h[:], off); err != nil {
		return nil, 0, ioOrBad(err)
	}
	if !bytes.Equal(h[:4], blockMagic[:]) {
		return nil, 0, errBadBlock
	}
	n := int64(binary.BigEndian.Uint32(h[4:8]))
	if n > maxBlock || n > limit-off-blockHeader {
		return nil, 0, errBadBlock
	}
	p := make([]byte, n)
	if _, err := r.ReadAt(p, off+blockHeader); err != nil {
		return nil, 0, ioOrBad(err)
	}
	crc := crc32.Update(0, castagnoli, h[4:8])
	if crc32.Update(crc, castagnoli, p) != binary.BigEndian.Uint32(h[8:12]) {
		return nil, 0, errBadBlock
	}
	return p, blockHeader + n, nil
}

func ioOrBad(err error) error {
	if errors.Is(err, io.EOF) {
		return errBadBlock
	}
	return err
}

// resync finds the first offset after from where a valid block starts,
// or -1 if none does before limit.
func (b *blockReader) resync(from int64) (int64, error) {
	const window = 64 << 10
	buf := make([]byte, window+len(blockMagic)-1)
	for pos := from + 1; pos < b.limit; pos += window {
		n, err := b.r.ReadAt(buf[:min(int64(len(buf)), b.limit-pos)], pos)
		if err != nil && !errors.Is(err, io.EOF) {
			return -1, err
		}
		for i := 0; i+len(blockMagic) <= n; {
			j := bytes.Index(buf[i:n], blockMagic[:])
			if j < 0 {
				break
			}
			cand := pos + int64(i+j)
			if _, _, err := readBlockAt(b.r, cand, b.limit); err == nil {
				return cand, nil
			} else if !errors.Is(err, errBadBlock) {
				return -1, err
			}
			i += j + 1
		}
	}
	return -1, nil
}

// appendEntry encodes e into an entries payload:
//
//	index uint64 | received int64 Unix µs | seq uint64 (8 bytes big-endian each)
//	then source, record, prev, hash, each as uvarint length and bytes
func appendEntry(dst []byte, e *Entry) []byte {
	dst = binary.BigEndian.AppendUint64(dst, e.Index)
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.Received.UnixMicro()))
	dst = binary.BigEndian.AppendUint64(dst, e.Seq)
	dst = appendBytes(dst, []byte(e.Source))
	dst = appendBytes(dst, e.Record)
	dst = appendBytes(dst, e.Prev)
	return appendBytes(dst, e.Hash)
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// decodeEntries decodes an entries payload (kind byte included). The
// entries alias p.
func decodeEntries(p []byte) ([]Entry, error) {
	if len(p) == 0 || p[0] != kindEntries {
		return nil, errors.New("not an entries block")
	}
	d := decoder{b: p[1:]}
	var out []Entry
	for len(d.b) > 0 {
		var e Entry
		e.Index = d.u64()
		e.Received = time.UnixMicro(int64(d.u64())).UTC()
		e.Seq = d.u64()
		e.Source = string(d.bytes())
		e.Record = d.bytes()
		e.Prev = d.bytes()
		e.Hash = d.bytes()
		if d.err != nil {
			return nil, fmt.Errorf("entry %d of block: %w", len(out), d.err)
		}
		out = append(out, e)
	}
	return out, nil
}

func appendCheckpoint(dst []byte, c *Checkpoint) []byte {
	dst = append(dst, kindCheckpoint)
	dst = binary.BigEndian.AppendUint64(dst, c.Index)
	dst = binary.BigEndian.AppendUint64(dst, uint64(c.Time.UnixMicro()))
	dst = appendBytes(dst, c.Hash)
	dst = appendBytes(dst, c.PublicKey)
	return appendBytes(dst, c.Signature)
}

func decodeCheckpoint(p []byte) (Checkpoint, error) {
	if len(p) == 0 || p[0] != kindCheckpoint {
		return Checkpoint{}, errors.New("not a checkpoint block")
	}
	d := decoder{b: p[1:]}
	var c Checkpoint
	c.Index = d.u64()
	c.Time = time.UnixMicro(int64(d.u64())).UTC()
	c.Hash = d.bytes()
	c.PublicKey = d.bytes()
	c.Signature = d.bytes()
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("trailing bytes")
	}
	if d.err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: %w", d.err)
	}
	return c, nil
}

type decoder struct {
	b   []byte
	err error
}

var errShort = errors.New("truncated record")

func (d *decoder) u64() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.err = errShort
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) bytes() []byte {
	if d.err != nil {
		return nil
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 {
		d.err = errShort
		return nil
	}
	d.b = d.b[k:]
	if n > uint64(len(d.b)) {
		d.err = errShort
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}
