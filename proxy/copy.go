package proxy

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// bufPool holds data-frame buffers: header room plus one chunk.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, frameHeaderLen+dataChunk)
	return &b
}}

// SessionClosedError reports that the other side ended the session with a
// reason code (a close frame).
type SessionClosedError struct{ Reason string }

func (e *SessionClosedError) Error() string { return "proxy: session closed by peer: " + e.Reason }

// errTruncated is returned when the tunnel ends without an end frame: the
// data that arrived may be incomplete, so the app must not see a clean end.
var errTruncated = errors.New("proxy: tunnel ended without an end frame")

// frameReader reads the payload of data frames as one byte stream. An end
// frame is io.EOF; the tunnel ending any other way is an error. Posture
// frames go to onPosture. Errors stick.
type frameReader struct {
	r         io.Reader
	remaining int
	hdr       [frameHeaderLen]byte
	onPosture func([]byte) error
	err       error
}

func (f *frameReader) Read(p []byte) (int, error) {
	if err := f.wait(); err != nil {
		return 0, err
	}
	if len(p) > f.remaining {
		p = p[:f.remaining]
	}
	n, err := f.r.Read(p)
	f.remaining -= n
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errTruncated
		}
		f.err = err
		if n > 0 {
			return n, nil
		}
	}
	return n, err
}

// wait blocks until payload of a data frame is there to read, or the
// stream has ended, and returns the error Read would.
func (f *frameReader) wait() error {
	for f.remaining == 0 {
		if f.err != nil {
			return f.err
		}
		f.err = f.next()
	}
	return nil
}

func (f *frameReader) next() error {
	typ, n, err := readHeader(f.r, &f.hdr)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errTruncated
		}
		return err
	}
	switch typ {
	case frameData:
		f.remaining = n
		return nil
	case frameEnd:
		return io.EOF
	case framePosture, frameClose:
		payload := make([]byte, n)
		if _, err := io.ReadFull(f.r, payload); err != nil {
			return errTruncated
		}
		if typ == frameClose {
			var c Close
			if json.Unmarshal(payload, &c) != nil || c.Reason == "" {
				c.Reason = "unspecified"
			}
			return &SessionClosedError{Reason: c.Reason}
		}
		if f.onPosture == nil {
			return fmt.Errorf("%w: posture frame from the accepting side", ErrUnexpectedFrame)
		}
		return f.onPosture(payload)
	}
	return fmt.Errorf("%w 0x%02x in an admitted session", ErrUnexpectedFrame, typ)
}

// frameWriter wraps every Write in data frames. It takes a buffer from
// bufPool for each Write, so a session between writes holds none.
type frameWriter struct {
	w io.Writer
}

func (f *frameWriter) Write(p []byte) (int, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	written := 0
	for len(p) > 0 {
		n := min(len(p), dataChunk)
		b := (*bp)[:frameHeaderLen+n]
		b[0] = frameData
		binary.BigEndian.PutUint32(b[1:], uint32(n))
		copy(b[frameHeaderLen:], p[:n])
		if _, err := f.w.Write(b); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// smallRead is the read size of a session that is idle or trickling. A
// session switches to a pooled dataChunk buffer when a read fills the small
// one, and back when reads shrink below it again, so thousands of idle
// sessions do not each pin a large buffer while they wait. Small buffers
// are pooled too: a pump that can wait for data without a buffer (the
// tunnel's frames) holds none while it waits.
const smallRead = 2048

// smallPool holds small read buffers, with room for the frame header.
var smallPool = sync.Pool{New: func() any {
	b := make([]byte, frameHeaderLen+smallRead)
	return &b
}}

// readBuf is a pump's read buffer, with frameHeaderLen bytes of room in
// front for the frame header.
type readBuf struct {
	small *[]byte // nil until needed, and while a pump waits without it
	big   *[]byte
}

// buf returns the buffer for the next read.
func (b *readBuf) buf() []byte {
	if b.big != nil {
		return *b.big
	}
	if b.small == nil {
		b.small = smallPool.Get().(*[]byte)
	}
	return *b.small
}

// adapt picks the buffer for the next read after one that read n bytes.
func (b *readBuf) adapt(n int) {
	switch {
	case b.big == nil && n == smallRead:
		b.big = bufPool.Get().(*[]byte)
	case b.big != nil && n < smallRead:
		bufPool.Put(b.big)
		b.big = nil
	}
}

// drop gives the small buffer back while the pump waits.
func (b *readBuf) drop() {
	if b.small != nil {
		smallPool.Put(b.small)
		b.small = nil
	}
}

func (b *readBuf) release() {
	b.drop()
	if b.big != nil {
		bufPool.Put(b.big)
		b.big = nil
	}
}

// pumpToTunnel copies src into data frames on dst until src ends, then
// sends an end frame. It reads straight into the frame buffer: one copy.
func pumpToTunnel(dst io.Writer, src io.Reader, activity func(int)) (int64, error) {
	var b readBuf
	defer b.release()
	var total int64
	for {
		buf := b.buf()
		n, err := src.Read(buf[frameHeaderLen:])
		if n > 0 {
			buf[0] = frameData
			binary.BigEndian.PutUint32(buf[1:], uint32(n))
			if _, werr := dst.Write(buf[:frameHeaderLen+n]); werr != nil {
				return total, werr
			}
			total += int64(n)
			activity(n)
		}
		if errors.Is(err, io.EOF) {
			return total, writeFrame(dst, frameEnd, nil)
		}
		if err != nil {
			return total, err
		}
		b.adapt(n)
	}
}

// pumpFromTunnel copies the payload of src's data frames to dst until src
// ends. An end frame is a clean end. While the session is idle or
// trickling it waits for each frame without a buffer. A read takes what is
// left of the current frame, up to the buffer's size, so that one write to
// dst carries it: crypto/tls returns one record per Read, and the sender
// wrote the whole frame at once, so the rest is already on its way.
func pumpFromTunnel(dst io.Writer, src *frameReader, activity func(int)) (int64, error) {
	var b readBuf
	defer b.release()
	var total int64
	for {
		if b.big == nil {
			b.drop()
			src.wait() // an error sticks: the Read below returns it
		}
		buf := b.buf()[frameHeaderLen:]
		n, err := src.Read(buf)
		for err == nil && n < len(buf) && src.remaining > 0 {
			var m int
			m, err = src.Read(buf[n:])
			n += m
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
			activity(n)
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		b.adapt(n)
	}
}

// closeWrite half-closes c where it can, else closes it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	c.Close()
}

// abort closes c so that its peer sees a reset rather than a clean end:
// truncated data must never look complete.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
