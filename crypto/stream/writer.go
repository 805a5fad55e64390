package stream

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Writer seals what is written to it into a stream on dst.
//
// Write buffers up to one segment and seals each segment once it is full.
// Flush seals what is buffered without ending the stream (the header goes
// out with the first segment, or alone if Flush is called before any
// Write). Close seals the final segment; without Close the
// stream is truncated and a Reader rejects it.
//
// A Writer takes its segment-sized buffers from a pool: one while it has
// plaintext buffered, one while it seals. Fed by ReadFrom from a
// connection that is idle or trickling, it waits in a small buffer of its
// own and holds none. It allocates nothing per segment, is not safe for
// concurrent use, and never closes dst.
type Writer struct {
	dst      io.Writer
	aead     cipher.AEAD
	header   []byte
	sentHdr  bool
	ad       [adSize]byte
	seg      int     // segment size
	bufp     *[]byte // pooled buffer behind buf; nil until needed and after release
	buf      []byte  // buffered plaintext; cap is the segment size
	small    [smallRead]byte
	index    uint64
	err      error // sticky
	closed   bool
	closeErr error
}

// smallRead is the size of ReadFrom's reads while its source is idle or
// trickling; a read that fills it switches ReadFrom to segment-sized reads
// until reads shrink below it again.
const smallRead = 2 << 10

// NewWriter returns a Writer that seals to dst under dataKey (32 bytes),
// with hdr as the stream's header. It draws the salt from crypto/rand and
// does no I/O: the header is written with the first segment or by Flush.
// The Writer does not keep dataKey.
func NewWriter(dst io.Writer, dataKey []byte, hdr Header) (*Writer, error) {
	if err := hdr.validate(); err != nil {
		return nil, err
	}
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("stream: read salt: %w", err)
	}
	k, err := deriveKeys(dataKey, salt)
	if err != nil {
		return nil, err
	}
	aead, err := newAEAD(k.segment)
	if err != nil {
		return nil, err
	}
	w := &Writer{
		dst:    dst,
		aead:   aead,
		header: sealHeader(&hdr, salt, k),
		seg:    hdr.SegmentSize,
	}
	hh := sha256.Sum256(w.header)
	copy(w.ad[:], hh[:])
	return w, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	return aead, nil
}

// Write buffers p and seals each segment as soon as it is full; a whole
// segment's worth of p is sealed without copying. It returns a non-nil
// error only if sealing or writing to dst failed, after which the Writer
// keeps failing.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := 0
	for len(p) > 0 {
		if len(w.buf) == 0 && len(p) >= w.seg {
			seg := p[:w.seg]
			if err := w.seal(seg, false); err != nil {
				return n, err
			}
			n += len(seg)
			p = p[len(seg):]
			continue
		}
		w.grab()
		k := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+k]
		n += k
		p = p[k:]
		if len(w.buf) == cap(w.buf) {
			err := w.seal(w.buf, false)
			w.buf = w.buf[:0]
			if err != nil {
				return n - k, err
			}
		}
	}
	return n, nil
}

// ReadFrom reads src until io.EOF and seals what it reads. It writes the
// header, and seals what Write buffered, before it first reads src, so the
// peer can check the key before any data flows. Unlike Write, it seals and
// writes whatever each Read of src returns without waiting to fill a
// segment, so io.Copy from a connection never holds data back; a source
// that fills the buffer (a file) still yields whole segments. It does not
// end the stream: call Close after it. An error from src is returned as is
// and leaves the Writer usable.
func (w *Writer) ReadFrom(src io.Reader) (int64, error) {
	var total int64
	if err := w.Flush(); err != nil {
		return 0, err
	}
	w.release()
	defer w.release()
	big := false
	for {
		if w.err != nil {
			return total, w.err
		}
		p := w.small[:]
		if big {
			w.grab()
			p = w.buf[:cap(w.buf)]
		}
		n, err := src.Read(p)
		total += int64(n)
		if n > 0 {
			if serr := w.seal(p[:n], false); serr != nil {
				return total, serr
			}
			switch {
			case !big && n == len(w.small):
				big = true
			case big && n < len(w.small):
				big = false
				w.release()
			}
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Flush seals and writes what is buffered as a segment that does not end
// the stream, and writes the header if it has not gone out yet. Use it
// where the peer must see data now (a request awaiting its response).
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf) > 0 {
		err := w.seal(w.buf, false)
		w.buf = w.buf[:0]
		return err
	}
	return w.writeHeader()
}

// Close seals what is buffered as the final segment (empty if nothing is
// buffered) and writes it. It does not close dst. Later calls return the
// first call's result; Write and Flush after Close return ErrClosed.
func (w *Writer) Close() error {
	if w.closed {
		return w.closeErr
	}
	w.closed = true
	if w.err == nil {
		w.seal(w.buf, true)
	}
	w.closeErr = w.err
	w.release()
	clear(w.small[:])
	if w.err == nil {
		w.err = ErrClosed
	}
	return w.closeErr
}

// grab makes sure buf has a segment-sized buffer.
func (w *Writer) grab() {
	if w.bufp == nil {
		w.bufp = getFrame(w.seg)
		w.buf = (*w.bufp)[:0:w.seg]
	}
}

// release clears the buffer's plaintext and returns it to the pool, unless
// plaintext is waiting in it.
func (w *Writer) release() {
	if w.bufp == nil || len(w.buf) > 0 && !w.closed {
		return
	}
	clear((*w.bufp)[:w.seg])
	putFrame(w.seg, w.bufp)
	w.bufp, w.buf = nil, nil
}

func (w *Writer) writeHeader() error {
	if w.sentHdr {
		return nil
	}
	if err := w.write(w.header); err != nil {
		w.err = fmt.Errorf("stream: write header: %w", err)
		return w.err
	}
	w.sentHdr = true
	return nil
}

func (w *Writer) seal(pt []byte, last bool) error {
	if w.index >= MaxSegments {
		w.err = fmt.Errorf("%w: %d segments", ErrTooLong, w.index)
		return w.err
	}
	word := uint32(len(pt))
	if last {
		word |= lastFlag
	}
	binary.BigEndian.PutUint64(w.ad[sha256.Size:], w.index)
	binary.BigEndian.PutUint32(w.ad[sha256.Size+8:], word)
	outp := getFrame(w.seg)
	defer putFrame(w.seg, outp)
	out := binary.BigEndian.AppendUint32((*outp)[:0], word)
	out = w.aead.Seal(out, nil, pt, w.ad[:])
	if err := w.writeHeader(); err != nil {
		return err
	}
	if err := w.write(out); err != nil {
		w.err = fmt.Errorf("stream: write segment %d: %w", w.index, err)
		return w.err
	}
	w.index++
	return nil
}

func (w *Writer) write(b []byte) error {
	n, err := w.dst.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	return err
}
