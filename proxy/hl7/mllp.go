package hl7

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// MLLP framing bytes.
const (
	StartBlock     = 0x0B // vertical tab: a frame begins
	EndBlock       = 0x1C // file separator: the message ends
	CarriageReturn = 0x0D // follows EndBlock
)

// DefaultMaxMessage bounds one framed message: 16 MiB.
const DefaultMaxMessage = 16 << 20

// Framing errors. A frame that is too large was read far enough to hold
// its header (a negative ACK can name its control ID); after the others
// the stream cannot be trusted to resynchronize.
var (
	ErrFraming  = errors.New("hl7: mllp: bad framing")
	ErrTooLarge = errors.New("hl7: mllp: message too large")
)

// Reader reads MLLP frames. It tolerates line ends and spaces between
// frames and a missing carriage return after the last end block; anything
// else outside a frame, a start block inside one, or a stream that ends
// inside one is an error, and errors stick. A Reader is not safe for
// concurrent use.
type Reader struct {
	br  *bufio.Reader
	max int
	buf []byte
	err error
}

// NewReader returns a Reader of frames from r of at most max bytes of
// message each (DefaultMaxMessage when max <= 0).
func NewReader(r io.Reader, max int) *Reader {
	if max <= 0 {
		max = DefaultMaxMessage
	}
	return &Reader{br: bufio.NewReaderSize(r, 64<<10), max: max}
}

// ReadFrame returns the next message, without its framing. The slice is
// valid until the next call. It returns io.EOF when the stream ends between
// frames. With ErrTooLarge it also returns the first max bytes of the
// message (for its header).
func (r *Reader) ReadFrame() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	msg, err := r.readFrame()
	if err != nil {
		r.err = err
	}
	return msg, err
}

func (r *Reader) readFrame() ([]byte, error) {
	for {
		c, err := r.br.ReadByte()
		if err != nil {
			if err == io.EOF {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("hl7: mllp: %w", err)
		}
		if c == StartBlock {
			break
		}
		if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
			return nil, fmt.Errorf("%w: byte 0x%02x outside a frame", ErrFraming, c)
		}
	}
	r.buf = r.buf[:0]
	for {
		chunk, err := r.br.ReadSlice(EndBlock)
		if len(r.buf)+len(chunk) > r.max+1 {
			r.buf = append(r.buf, chunk[:r.max-len(r.buf)]...)
			return r.buf, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, r.max)
		}
		r.buf = append(r.buf, chunk...)
		if err == nil {
			break
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return nil, fmt.Errorf("%w: stream ended inside a frame", ErrFraming)
		}
		return nil, fmt.Errorf("hl7: mllp: %w", err)
	}
	msg := r.buf[:len(r.buf)-1]
	if bytes.IndexByte(msg, StartBlock) >= 0 {
		return nil, fmt.Errorf("%w: start block inside a frame", ErrFraming)
	}
	c, err := r.br.ReadByte()
	switch {
	case err == io.EOF:
	case err != nil:
		return nil, fmt.Errorf("hl7: mllp: %w", err)
	case c == CarriageReturn || c == '\n':
	default:
		return nil, fmt.Errorf("%w: byte 0x%02x after the end block", ErrFraming, c)
	}
	return msg, nil
}

// AppendFrame appends msg framed for MLLP to b.
func AppendFrame(b, msg []byte) []byte {
	b = append(b, StartBlock)
	b = append(b, msg...)
	return append(b, EndBlock, CarriageReturn)
}

// WriteFrame writes msg framed for MLLP to w in one Write, so frames
// written by different goroutines to one connection do not interleave. It
// refuses a message holding a framing byte.
func WriteFrame(w io.Writer, msg []byte) error {
	if bytes.IndexByte(msg, StartBlock) >= 0 || bytes.IndexByte(msg, EndBlock) >= 0 {
		return fmt.Errorf("%w: message holds a framing byte", ErrFraming)
	}
	_, err := w.Write(AppendFrame(make([]byte, 0, len(msg)+3), msg))
	return err
}
