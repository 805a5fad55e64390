package stream

import (
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
)

// Reader opens a stream sealed by a Writer.
//
// Read returns plaintext only from segments that have authenticated, each
// as soon as it has arrived, and io.EOF only after the final segment has
// authenticated and src has ended right after it. Over a connection that
// means the sender must end its side after Writer.Close (CloseWrite on
// TCP, closing the send side of a QUIC stream), or the last Read waits for
// it; the final segment's plaintext has been returned by then.
//
// A Reader reads src with two reads per segment; wrap a connection in a
// bufio.Reader to read in larger chunks. It holds a segment-sized buffer
// for the ciphertext while a segment arrives and one for the plaintext
// until it has been read, both from a pool; it allocates nothing per
// segment, and is not safe for concurrent use. It never closes src.
type Reader struct {
	src   io.Reader
	hdr   Header
	aead  cipher.AEAD
	ad    [adSize]byte
	word  [wordSize]byte
	plain *[]byte // buffer of the current segment's plaintext; nil between segments
	pt    []byte  // plaintext of the current segment, in plain
	seg   int     // segment size
	off   int     // bytes of pt already returned
	index uint64  // index of the next segment
	last  bool    // the final segment has been opened
	err   error   // sticky; io.EOF at the end
}

// NewReader reads the stream header from src, asks key for the data key,
// checks the key commitment (ErrWrongKey) and the header (ErrHeader), and
// returns a Reader positioned at the first segment. It reads exactly the
// header's bytes from src. Errors from key are returned wrapped.
func NewReader(src io.Reader, key KeyFunc) (*Reader, error) {
	raw, err := parseHeader(src)
	if err != nil {
		return nil, err
	}
	dataKey, err := key(raw.Header)
	if err != nil {
		return nil, fmt.Errorf("stream: data key for key ID %q: %w", raw.KeyID, err)
	}
	k, err := raw.open(dataKey)
	if err != nil {
		return nil, err
	}
	aead, err := newAEAD(k.segment)
	if err != nil {
		return nil, err
	}
	r := &Reader{
		src:  src,
		hdr:  raw.Header,
		aead: aead,
		seg:  raw.SegmentSize,
	}
	hh := sha256.Sum256(raw.bytes)
	copy(r.ad[:], hh[:])
	return r, nil
}

// Header returns the stream's authenticated header. Check its context
// (route, jurisdiction, policy version) before using the plaintext.
func (r *Reader) Header() Header {
	h := r.hdr
	h.WrappedKey = append([]byte(nil), r.hdr.WrappedKey...)
	return h
}

// Read reads plaintext into p. When nothing is pending and p has room for a
// whole segment, the segment is opened straight into p, saving a copy; if
// it fails to authenticate, Read returns 0 and the error, and what it wrote
// into p has been zeroed. After an error, every call returns the same
// error.
func (r *Reader) Read(p []byte) (int, error) {
	for r.off == len(r.pt) {
		r.release()
		if r.err != nil {
			return 0, r.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		if len(p) >= r.seg {
			if n := r.next(p); n > 0 {
				return n, nil
			}
			continue
		}
		r.next(nil)
	}
	n := copy(p, r.pt[r.off:])
	r.off += n
	return n, nil
}

// WriteTo writes the plaintext to dst without copying it through a caller's
// buffer, until the end of the stream or an error. It returns nil at the
// end of the stream, like io.Copy.
func (r *Reader) WriteTo(dst io.Writer) (int64, error) {
	var total int64
	for {
		for r.off == len(r.pt) {
			if r.err == io.EOF {
				return total, nil
			}
			if r.err != nil {
				return total, r.err
			}
			r.next(nil)
		}
		n, err := dst.Write(r.pt[r.off:])
		r.off += n
		if r.off == len(r.pt) {
			r.release()
		}
		total += int64(n)
		if err == nil && r.off < len(r.pt) {
			err = io.ErrShortWrite
		}
		if err != nil {
			return total, err
		}
	}
}

// next opens the next segment, or sets r.err. With into nil it opens the
// segment into r.pt; otherwise into into, which must have room for a whole
// segment, and returns the plaintext's length.
func (r *Reader) next(into []byte) int {
	r.pt = r.pt[:0]
	r.off = 0
	if r.last {
		r.err = r.checkEnd()
		return 0
	}
	if r.index >= MaxSegments {
		r.fail(fmt.Errorf("%w: segment %d", ErrTooLong, r.index))
		return 0
	}
	if _, err := io.ReadFull(r.src, r.word[:]); err != nil {
		r.fail(r.readErr(err))
		return 0
	}
	word := binary.BigEndian.Uint32(r.word[:])
	last := word&lastFlag != 0
	n := int(word &^ lastFlag)
	if n > r.seg {
		r.fail(fmt.Errorf("%w: segment %d length %d exceeds segment size %d", ErrAuthFailed, r.index, n, r.seg))
		return 0
	}
	if n == 0 && !last {
		r.fail(fmt.Errorf("%w: segment %d is empty and not final", ErrAuthFailed, r.index))
		return 0
	}
	frameBuf := getFrame(r.seg)
	defer putFrame(r.seg, frameBuf)
	frame := (*frameBuf)[:nonceSize+n+gcmTagSize]
	if _, err := io.ReadFull(r.src, frame); err != nil {
		r.fail(r.readErr(err))
		return 0
	}
	binary.BigEndian.PutUint64(r.ad[sha256.Size:], r.index)
	copy(r.ad[sha256.Size+8:], r.word[:])
	// Into a buffer apart from the frame: opened in place, the AEAD would
	// first move the whole ciphertext over the nonce.
	dst := into
	if dst == nil {
		if r.plain == nil {
			r.plain = getFrame(r.seg)
		}
		dst = *r.plain
	}
	// On a tag mismatch the AEAD zeroes what it wrote into dst.
	pt, err := r.aead.Open(dst[:0], nil, frame, r.ad[:])
	if err != nil {
		r.fail(fmt.Errorf("%w: segment %d", ErrAuthFailed, r.index))
		return 0
	}
	if into == nil {
		r.pt = pt
	}
	r.index++
	r.last = last
	return len(pt)
}

func (r *Reader) readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		if r.index == 0 && errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: no segments after header", ErrTruncated)
		}
		return fmt.Errorf("%w: input ends at segment %d before the final segment", ErrTruncated, r.index)
	}
	return fmt.Errorf("stream: read segment %d: %w", r.index, err)
}

// checkEnd makes sure nothing follows the final segment.
func (r *Reader) checkEnd() error {
	for {
		n, err := r.src.Read(r.word[:1])
		if n > 0 {
			return ErrTrailingData
		}
		if errors.Is(err, io.EOF) {
			return io.EOF
		}
		if err != nil {
			return fmt.Errorf("stream: read after final segment: %w", err)
		}
	}
}

func (r *Reader) fail(err error) {
	r.err = err
	if r.plain != nil {
		clear((*r.plain)[:cap(*r.plain)])
	}
	r.release()
}

// release returns the plaintext buffer once it has been consumed, so a
// reader waiting for the next segment holds no segment-sized buffer.
func (r *Reader) release() {
	if r.plain != nil {
		putFrame(r.seg, r.plain)
		r.plain = nil
	}
	r.pt = nil
	r.off = 0
}

// framePools hold segment buffers by size class, the powers of two from
// MinSegmentSize to MaxSegmentSize, each with room for a sealed segment of
// that size, its length word included. Readers and Writers share them.
var framePools [sizeClasses]sync.Pool

// sizeClasses counts the powers of two from MinSegmentSize to
// MaxSegmentSize.
const sizeClasses = 7

// sizeClass is the index in framePools of the smallest class that holds a
// segment of seg bytes (MinSegmentSize to MaxSegmentSize).
func sizeClass(seg int) int {
	return bits.Len(uint(seg-1)) - bits.Len(MinSegmentSize-1)
}

// getFrame returns a pooled buffer with room for a sealed segment of seg
// bytes; its contents are undefined.
func getFrame(seg int) *[]byte {
	c := sizeClass(seg)
	if b, ok := framePools[c].Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, MinSegmentSize<<c+frameOverhead)
	return &b
}

// putFrame returns a buffer from getFrame(seg) to its pool.
func putFrame(seg int, b *[]byte) {
	framePools[sizeClass(seg)].Put(b)
}
