package hl7

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/medgate/medgate/crypto/pseudonym"
	"github.com/medgate/medgate/proxy/mask"
)

// Config holds the codec's settings. The zero value is ready to use.
type Config struct {
	// MaxMessage bounds one message; 0 means DefaultMaxMessage. A larger
	// message is refused with a negative ACK.
	MaxMessage int
	// Now is the clock for the time of negative ACKs and the reference
	// year of birth years when a message has no time (MSH-7); nil means
	// time.Now.
	Now func() time.Time
}

// Codec masks HL7 v2 messages with one profile. It is safe for concurrent
// use: one Codec serves every connection of a route.
type Codec struct {
	profile *mask.Profile
	keyer   *pseudonym.Keyer
	masker  *masker
	max     int
	now     func() time.Time
}

// New returns a Codec applying p's HL7 rules. It fails when a rule does not
// parse, or when the profile needs a keyer (pseudonyms, date shifts, UID
// remaps) and env has none.
func New(p *mask.Profile, env mask.Env, cfg Config) (*Codec, error) {
	if p == nil {
		return nil, errors.New("hl7: no profile")
	}
	mk, err := newMasker(p, env.Keyer)
	if err != nil {
		return nil, err
	}
	c := &Codec{profile: p, keyer: env.Keyer, masker: mk, max: cfg.MaxMessage, now: cfg.Now}
	if c.max <= 0 {
		c.max = DefaultMaxMessage
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// NewFilter returns the filter that masks HL7 messages from an MLLP sender
// toward its receiver with p (see Codec.Filter). A profile that New refuses
// gives a filter that refuses every connection, with a negative ACK for
// its first message.
func NewFilter(p *mask.Profile, env mask.Env) mask.Filter {
	c, err := New(p, env, Config{})
	if err != nil {
		return func(dst io.Writer, src io.Reader, back io.Writer, report func(mask.Object)) error {
			r := NewReader(src, DefaultMaxMessage)
			frame, rerr := r.ReadFrame()
			if rerr == nil || errors.Is(rerr, ErrTooLarge) {
				writeNAK(back, frame, time.Now())
			}
			return fmt.Errorf("%w (%w)", err, mask.ErrUnmaskable)
		}
	}
	return c.Filter
}

// Filter masks every message it reads from src and writes it to dst, one
// MLLP frame per message, until src ends. It implements mask.Filter. A
// frame that is not an HL7 v2 message, or is too large, is answered on
// back with a negative ACK (MSA-1 AR, MSA-2 the message's control ID when
// it can be read) and Filter returns an error wrapping mask.ErrUnmaskable;
// so does a stream that is not MLLP, without an answer. Nothing of a
// refused message reaches dst. Each message that crossed is reported: its
// type, the pseudonym of its patient and the SHA-256 of the masked message
// without its framing.
//
// back may be written by the goroutine carrying the receiver's ACKs as
// well: each frame goes out in one Write, which net.Conn keeps whole.
func (c *Codec) Filter(dst io.Writer, src io.Reader, back io.Writer, report func(mask.Object)) error {
	return c.run(dst, src, back, report, false)
}

// Replies carries the receiver's side of a connection back to the sender:
// acknowledgements (MSH-9 ACK) pass unchanged; any other message (a query
// response with patient data) is masked as Filter masks. A frame that does
// not parse ends the stream with an error wrapping mask.ErrUnmaskable and
// no answer. It implements mask.Filter.
func (c *Codec) Replies(dst io.Writer, src io.Reader, back io.Writer, report func(mask.Object)) error {
	return c.run(dst, src, back, report, true)
}

func (c *Codec) run(dst io.Writer, src io.Reader, back io.Writer, report func(mask.Object), replies bool) error {
	r := NewReader(src, c.max)
	var out []byte
	for n := 1; ; n++ {
		frame, err := r.ReadFrame()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if errors.Is(err, ErrTooLarge) && !replies {
				writeNAK(back, frame, c.now())
			}
			if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrFraming) {
				return fmt.Errorf("%w (message %d; %w)", err, n, mask.ErrUnmaskable)
			}
			return err
		}
		if replies && IsACK(frame) {
			if err := WriteFrame(dst, frame); err != nil {
				return fmt.Errorf("hl7: write ack: %w", err)
			}
			continue
		}
		masked, obj, err := c.mask(frame, out[:0])
		if err != nil {
			if !replies {
				writeNAK(back, frame, c.now())
			}
			return fmt.Errorf("%w (message %d; %w)", err, n, mask.ErrUnmaskable)
		}
		out = masked
		if _, err := dst.Write(AppendFrame(make([]byte, 0, len(masked)+3), masked)); err != nil {
			return fmt.Errorf("hl7: write message %d: %w", n, err)
		}
		if report != nil {
			report(obj)
		}
	}
}

// Mask masks one message (without its framing) and returns it with what
// an access event records of it.
func (c *Codec) Mask(msg []byte) ([]byte, mask.Object, error) {
	return c.mask(msg, nil)
}

func (c *Codec) mask(frame, buf []byte) ([]byte, mask.Object, error) {
	m, err := Parse(frame)
	if err != nil {
		return nil, mask.Object{}, err
	}
	if t := m.Type(); len(t) < 3 || !segmentName(t[:3]) {
		return nil, mask.Object{}, &ParseError{Reason: "no message type (MSH-9)"}
	}
	obj := mask.Object{
		Protocol:       "hl7",
		Operation:      m.Type(),
		Profile:        c.profile.Name,
		ProfileVersion: c.profile.Version,
	}
	ctx := &msgContext{d: m.Delims, refYear: c.now().Year()}
	if y, ok := mask.GeneralizeValue(mask.GeneralizeYear, m.Header().Field(7), 0); ok && y != "" {
		ctx.refYear, _ = strconv.Atoi(y)
	}
	for i := range m.Segments {
		if m.Segments[i].Name == "PID" {
			if id := patientID(&m.Segments[i], m.Delims); id != "" && c.keyer != nil {
				obj.PatientPseudonym = c.keyer.Token(pseudonym.KindPatientID, id)
			}
			break
		}
	}
	c.masker.mask(m, ctx)
	out := m.AppendTo(buf)
	if len(out) > c.max {
		return nil, mask.Object{}, &ParseError{Reason: "masked message exceeds the size limit"}
	}
	for _, b := range out {
		if b == StartBlock || b == EndBlock {
			return nil, mask.Object{}, &ParseError{Reason: "masked message holds a framing byte"}
		}
	}
	sum := sha256.Sum256(out)
	obj.SHA256 = hex.EncodeToString(sum[:])
	return out, obj, nil
}

// header holds the fields of a frame's MSH line that an acknowledgement
// needs, raw, when the line can be read.
type header struct {
	d      Delimiters
	fields []string // fields[n] is MSH-n for n >= 3
}

func readHeader(frame []byte) (header, bool) {
	d, err := ParseDelimiters(frame)
	if err != nil {
		return header{}, false
	}
	line := string(firstLine(frame))
	fs := strings.Split(line[4:], string(d.Field))
	return header{d: d, fields: append([]string{"MSH", string(d.Field)}, fs...)}, true
}

func (h header) field(n int) string {
	if n < len(h.fields) {
		return h.fields[n]
	}
	return ""
}

// IsACK reports whether frame is an acknowledgement: an HL7 message whose
// MSH-9 message code is ACK.
func IsACK(frame []byte) bool {
	h, ok := readHeader(frame)
	if !ok {
		return false
	}
	code, _, _ := strings.Cut(h.field(9), string(h.d.Component))
	return code == "ACK"
}

// ReadACK returns the acknowledgement code (MSA-1: AA, AE, AR, CA, CE, CR)
// and the acknowledged control ID (MSA-2, decoded) of an acknowledgement.
func ReadACK(frame []byte) (code, controlID string, ok bool) {
	if !IsACK(frame) {
		return "", "", false
	}
	m, err := Parse(frame)
	if err != nil {
		return "", "", false
	}
	for i := range m.Segments {
		if s := &m.Segments[i]; s.Name == "MSA" {
			return s.Field(1), m.Delims.DecodeValue(s.Field(2)), true
		}
	}
	return "", "", false
}

// maxEcho bounds what a negative ACK copies from the refused message's
// header.
const maxEcho = 199

// NAK returns a negative acknowledgement of frame: MSA-1 AR, MSA-2 the
// frame's control ID (MSH-10) when its header can be read. The header's
// sending and receiving application and facility are swapped, as an
// acknowledgement's are, and its delimiters kept; a frame without a
// readable header gets |^~\& and empty fields. MSA-3 says why, without
// anything of the message.
func NAK(frame []byte, now time.Time) []byte {
	h, ok := readHeader(frame)
	if !ok {
		h = header{d: DefaultDelimiters}
	}
	echo := func(n int) string {
		v := h.field(n)
		if len(v) > maxEcho || strings.ContainsAny(v, "\x0b\x1c") {
			return ""
		}
		return v
	}
	d := h.d
	trigger := ""
	if ok {
		parts := strings.Split(h.field(9), string(d.Component))
		if len(parts) > 1 {
			trigger = codeOnly(parts[1])
		}
	}
	msgType := "ACK"
	if trigger != "" {
		msgType += string(d.Component) + trigger + string(d.Component) + "ACK"
	}
	processing := codeOnly(h.field(11))
	if processing == "" {
		processing = "P"
	}
	version := h.field(12)
	if version == "" || len(version) > 20 {
		version = "2.5"
	}
	var id [8]byte
	rand.Read(id[:])
	fs := string(d.Field)
	msh := strings.Join([]string{
		"MSH", d.encoding(), echo(5), echo(6), echo(3), echo(4),
		now.UTC().Format("20060102150405"), "", msgType,
		"MG" + strings.ToUpper(hex.EncodeToString(id[:])), processing, version,
	}, fs)
	msa := strings.Join([]string{"MSA", "AR", echo(10), d.EncodeValue("message refused: it could not be masked")}, fs)
	return []byte(msh + "\r" + msa + "\r")
}

func writeNAK(back io.Writer, frame []byte, now time.Time) {
	if back == nil {
		return
	}
	WriteFrame(back, NAK(frame, now))
}
