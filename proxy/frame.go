package proxy

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Frame types of the medgate/1 tunnel protocol. Each frame is a one-byte
// type, a four-byte big-endian payload length, and the payload.
const (
	frameHello   byte = 0x01 // connecting side: Hello (JSON)
	frameAdmit   byte = 0x02 // accepting side: Admit (JSON)
	frameDeny    byte = 0x03 // accepting side: Deny (JSON), then close
	frameData    byte = 0x10 // application bytes (or inner-layer records)
	frameEnd     byte = 0x11 // the sender will send no more data frames
	framePosture byte = 0x12 // a refreshed posture token (JSON)
	frameClose   byte = 0x13 // the sender ends the session: Close (JSON)
)

const (
	frameHeaderLen = 5
	// maxControlFrame bounds hello, admit, deny, posture and close frames.
	maxControlFrame = 64 << 10
	// maxDataFrame bounds data frames; senders use at most dataChunk.
	maxDataFrame = 1<<20 + 4096
	// dataChunk is the largest payload of the data frames this side
	// sends: with its header a frame fills exactly two TLS records.
	dataChunk = 32<<10 - frameHeaderLen
)

// ProtocolVersion is the version carried in hello and admit frames.
const ProtocolVersion = 1

// Errors of the tunnel protocol.
var (
	ErrFrameTooLarge   = errors.New("proxy: frame exceeds its size limit")
	ErrUnexpectedFrame = errors.New("proxy: unexpected frame type")
	ErrBadFrame        = errors.New("proxy: malformed frame")
)

// Hello opens a session.
type Hello struct {
	Version int    `json:"v"`
	Route   string `json:"route"`
	Session string `json:"session"`
	// Posture is the connecting device's signed posture token.
	Posture string `json:"posture,omitempty"`
	// Key is the data key for the direction the connecting side sends,
	// wrapped under its own key-encryption key. Absent when the route's
	// inner layer is off.
	Key *WrappedKey `json:"key,omitempty"`
}

// Admit accepts a session.
type Admit struct {
	Version       int         `json:"v"`
	Session       string      `json:"session"`
	Verdict       string      `json:"verdict"`
	Profile       string      `json:"profile,omitempty"`
	PolicyVersion string      `json:"policy_version,omitempty"`
	Key           *WrappedKey `json:"key,omitempty"`
}

// Deny refuses a session. Reason is a code, never policy detail.
type Deny struct {
	Reason string `json:"reason"`
}

// Close ends an admitted session early, with a reason code.
type Close struct {
	Reason string `json:"reason"`
}

// WrappedKey is a data key wrapped under a named key-encryption key.
type WrappedKey struct {
	KeyID   string `json:"id"`
	Wrapped []byte `json:"wrapped"`
}

func (h Hello) validate() error {
	switch {
	case h.Version != ProtocolVersion:
		return fmt.Errorf("%w: hello version %d, want %d", ErrBadFrame, h.Version, ProtocolVersion)
	case h.Route == "" || len(h.Route) > 128:
		return fmt.Errorf("%w: hello route missing or too long", ErrBadFrame)
	case len(h.Session) != 32:
		return fmt.Errorf("%w: hello session ID must be 32 hex digits", ErrBadFrame)
	}
	for _, c := range h.Session {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("%w: hello session ID must be 32 hex digits", ErrBadFrame)
		}
	}
	return nil
}

// writeFrame writes one frame in a single Write, so a frame never spans
// more TLS records than it needs.
func writeFrame(w io.Writer, typ byte, payload []byte) error {
	buf := make([]byte, frameHeaderLen+len(payload))
	buf[0] = typ
	binary.BigEndian.PutUint32(buf[1:], uint32(len(payload)))
	copy(buf[frameHeaderLen:], payload)
	_, err := w.Write(buf)
	return err
}

func writeJSONFrame(w io.Writer, typ byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxControlFrame {
		return ErrFrameTooLarge
	}
	return writeFrame(w, typ, b)
}

// readHeader reads one frame header and checks the length against the
// limit for its type.
func readHeader(r io.Reader, hdr *[frameHeaderLen]byte) (typ byte, n int, err error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, 0, err
	}
	typ = hdr[0]
	length := binary.BigEndian.Uint32(hdr[1:])
	limit := uint32(maxControlFrame)
	switch typ {
	case frameData:
		limit = maxDataFrame
	case frameEnd:
		limit = 0
	case frameHello, frameAdmit, frameDeny, framePosture, frameClose:
	default:
		return typ, 0, fmt.Errorf("%w 0x%02x", ErrUnexpectedFrame, typ)
	}
	if length > limit {
		return typ, 0, fmt.Errorf("%w: type 0x%02x, %d bytes", ErrFrameTooLarge, typ, length)
	}
	return typ, int(length), nil
}

// readControl reads one control frame and decodes its JSON payload into v
// when its type is want. It returns the type read; a deny or close frame is
// decoded into the returned *Deny regardless of want.
func readControl(r io.Reader, want byte, v any) (byte, *Deny, error) {
	var hdr [frameHeaderLen]byte
	typ, n, err := readHeader(r, &hdr)
	if err != nil {
		return typ, nil, err
	}
	if typ == frameData {
		return typ, nil, fmt.Errorf("%w: data before the session was admitted", ErrUnexpectedFrame)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return typ, nil, err
	}
	switch typ {
	case want:
		if err := json.Unmarshal(payload, v); err != nil {
			return typ, nil, fmt.Errorf("%w: %v", ErrBadFrame, err)
		}
		return typ, nil, nil
	case frameDeny, frameClose:
		var d Deny
		if err := json.Unmarshal(payload, &d); err != nil {
			return typ, nil, fmt.Errorf("%w: %v", ErrBadFrame, err)
		}
		return typ, &d, nil
	}
	return typ, nil, fmt.Errorf("%w 0x%02x, want 0x%02x", ErrUnexpectedFrame, typ, want)
}
