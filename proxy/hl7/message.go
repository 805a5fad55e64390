// Package hl7 masks HL7 v2 messages carried over MLLP, the framing legacy
// interface engines speak over TCP. It parses each message with the
// delimiters its own header declares, applies a mask.Profile's HL7 rules
// to segments, fields, repetitions, components and subcomponents, and
// writes the message back with the same delimiters and segment ends, so
// that what a rule does not touch crosses byte for byte.
//
// Masking fails closed: a frame that is not an HL7 v2 message is answered
// with a negative acknowledgement toward its sender and never forwarded.
// The package never logs; errors hold positions and reasons, never field
// values.
package hl7

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Delimiters are a message's encoding characters, from MSH-1 and MSH-2.
// A zero byte is a delimiter the message does not declare.
type Delimiters struct {
	Field, Component, Repetition, Escape, Subcomponent, Truncation byte
}

// DefaultDelimiters are |^~\&.
var DefaultDelimiters = Delimiters{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&'}

// encoding returns MSH-2 for d.
func (d Delimiters) encoding() string {
	var b []byte
	for _, c := range []byte{d.Component, d.Repetition, d.Escape, d.Subcomponent, d.Truncation} {
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}

// Segment is one segment of a message. Fields[i] is field i as the
// standard numbers it, raw (escaped) as it appeared: Fields[0] is the
// segment name, and for MSH, Fields[1] is the field separator and
// Fields[2] the encoding characters. A segment of an empty line has no
// name and no fields.
type Segment struct {
	Name   string
	Fields []string
	// End is what ended the segment: "\r", "\n", "\r\n", or "" for the
	// last one when the message has no final segment end.
	End string
}

// Field returns field n (1-based) raw, or "" when the segment has no
// such field.
func (s *Segment) Field(n int) string {
	if n < 1 || n >= len(s.Fields) {
		return ""
	}
	return s.Fields[n]
}

// Message is a parsed HL7 v2 message. Its first segment is MSH.
type Message struct {
	Delims   Delimiters
	Segments []Segment
}

// ErrNotHL7 is wrapped by every error Parse returns.
var ErrNotHL7 = errors.New("hl7: not an HL7 v2 message")

// ParseError locates why a message does not parse. It holds no content of
// the message.
type ParseError struct {
	Segment int // 1-based index of the segment at fault, 0 for the header
	Reason  string
}

func (e *ParseError) Error() string {
	if e.Segment == 0 {
		return "hl7: header: " + e.Reason
	}
	return fmt.Sprintf("hl7: segment %d: %s", e.Segment, e.Reason)
}

func (e *ParseError) Unwrap() error { return ErrNotHL7 }

// ParseDelimiters reads the delimiters from the start of a message
// ("MSH|^~\&|..."). The encoding characters must be 1 to 5 distinct
// bytes, none of them a letter, digit, space, line end or the field
// separator.
func ParseDelimiters(b []byte) (Delimiters, error) {
	var d Delimiters
	if len(b) < 5 || string(b[:3]) != "MSH" {
		return d, &ParseError{Reason: "does not start with MSH"}
	}
	d.Field = b[3]
	if !delimiterByte(d.Field) {
		return d, &ParseError{Reason: "field separator (MSH-1) is not a punctuation character"}
	}
	end := 4
	for end < len(b) && b[end] != d.Field && b[end] != '\r' && b[end] != '\n' {
		end++
	}
	enc := b[4:end]
	if len(enc) < 1 || len(enc) > 5 {
		return d, &ParseError{Reason: "encoding characters (MSH-2) are not 1 to 5 characters"}
	}
	seen := map[byte]bool{d.Field: true}
	for _, c := range enc {
		if !delimiterByte(c) || seen[c] {
			return d, &ParseError{Reason: "encoding characters (MSH-2) are not distinct punctuation characters"}
		}
		seen[c] = true
	}
	ptrs := []*byte{&d.Component, &d.Repetition, &d.Escape, &d.Subcomponent, &d.Truncation}
	for i, c := range enc {
		*ptrs[i] = c
	}
	return d, nil
}

func delimiterByte(c byte) bool {
	return c > ' ' && c < 0x7f && !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z')
}

// Parse parses an HL7 v2 message: segments end with "\r" (or, leniently,
// "\n" or "\r\n"), empty lines are kept as they are, and every other line
// must be a segment: a name of three upper-case letters or digits, then
// the field separator or the line's end. A second MSH (a batch in one
// frame) is refused. The message shares no memory with b.
func Parse(b []byte) (*Message, error) {
	d, err := ParseDelimiters(b)
	if err != nil {
		return nil, err
	}
	m := &Message{Delims: d}
	s := string(b)
	fs := string(d.Field)
	for i := 0; len(s) > 0; i++ {
		line, end := s, ""
		if j := strings.IndexAny(s, "\r\n"); j >= 0 {
			line, end = s[:j], s[j:j+1]
			if s[j] == '\r' && j+1 < len(s) && s[j+1] == '\n' {
				end = "\r\n"
			}
		}
		s = s[len(line)+len(end):]
		seg := Segment{End: end}
		if line != "" {
			if !segmentName(line) {
				return nil, &ParseError{Segment: i + 1, Reason: "does not start with a segment name of three upper-case letters or digits and the field separator"}
			}
			seg.Name = line[:3]
			if seg.Name == "MSH" {
				if i != 0 {
					return nil, &ParseError{Segment: i + 1, Reason: "a second MSH: more than one message in a frame"}
				}
				seg.Fields = append([]string{"MSH", fs}, strings.Split(line[4:], fs)...)
			} else if len(line) == 3 {
				seg.Fields = []string{seg.Name}
			} else {
				if line[3] != d.Field {
					return nil, &ParseError{Segment: i + 1, Reason: "segment name is not followed by the field separator"}
				}
				seg.Fields = strings.Split(line, fs)
			}
		}
		m.Segments = append(m.Segments, seg)
	}
	return m, nil
}

func segmentName(line string) bool {
	if len(line) < 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		c := line[i]
		if !(c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// AppendTo appends the encoded message to b.
func (m *Message) AppendTo(b []byte) []byte {
	fs := m.Delims.Field
	for _, seg := range m.Segments {
		first := 1
		if seg.Name == "MSH" && len(seg.Fields) >= 3 {
			b = append(b, "MSH"...)
			b = append(b, fs)
			b = append(b, seg.Fields[2]...)
			first = 3
		} else if len(seg.Fields) > 0 {
			b = append(b, seg.Fields[0]...)
		}
		for _, f := range seg.Fields[min(first, len(seg.Fields)):] {
			b = append(b, fs)
			b = append(b, f...)
		}
		b = append(b, seg.End...)
	}
	return b
}

// Bytes returns the encoded message.
func (m *Message) Bytes() []byte { return m.AppendTo(nil) }

// Header returns the MSH segment.
func (m *Message) Header() *Segment { return &m.Segments[0] }

// Type returns MSH-9's message code and trigger event ("ADT^A01"), or the
// code alone, restricted to letters, digits and underscores so that it can
// label events and metrics.
func (m *Message) Type() string {
	return messageType(m.Header().Field(9), m.Delims)
}

func messageType(f string, d Delimiters) string {
	parts := strings.Split(f, string(d.Component))
	code := codeOnly(parts[0])
	if len(parts) > 1 && codeOnly(parts[1]) != "" {
		return code + "^" + codeOnly(parts[1])
	}
	return code
}

func codeOnly(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < 16; i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// ControlID returns MSH-10, raw.
func (m *Message) ControlID() string { return m.Header().Field(10) }

// DecodeValue decodes the escape sequences of a raw value: \F\ \S\ \T\ \R\
// \E\ \P\ to the delimiters they stand for and \Xhh..\ to bytes. Other
// sequences (formatting, character sets) stay as they are.
func (d Delimiters) DecodeValue(s string) string {
	if d.Escape == 0 || strings.IndexByte(s, d.Escape) < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != d.Escape {
			b.WriteByte(c)
			continue
		}
		j := strings.IndexByte(s[i+1:], d.Escape)
		if j < 0 {
			b.WriteString(s[i:])
			break
		}
		seq := s[i+1 : i+1+j]
		if r, ok := d.unescapeSeq(seq); ok {
			b.WriteString(r)
		} else {
			b.WriteString(s[i : i+j+2])
		}
		i += j + 1
	}
	return b.String()
}

func (d Delimiters) unescapeSeq(seq string) (string, bool) {
	switch seq {
	case "F":
		return string(d.Field), true
	case "S":
		return string(d.Component), d.Component != 0
	case "T":
		return string(d.Subcomponent), d.Subcomponent != 0
	case "R":
		return string(d.Repetition), d.Repetition != 0
	case "E":
		return string(d.Escape), true
	case "P":
		return string(d.Truncation), d.Truncation != 0
	}
	if len(seq) > 1 && seq[0] == 'X' && len(seq)%2 == 1 {
		var out []byte
		for k := 1; k < len(seq); k += 2 {
			v, err := strconv.ParseUint(seq[k:k+2], 16, 8)
			if err != nil {
				return "", false
			}
			out = append(out, byte(v))
		}
		return string(out), true
	}
	return "", false
}

// EncodeValue escapes s for use as a value: delimiters become their escape
// sequences and line ends \X0D\ and \X0A\.
func (d Delimiters) EncodeValue(s string) string {
	if d.Escape == 0 {
		return s
	}
	special := func(c byte) string {
		e := string(d.Escape)
		switch {
		case c == d.Field:
			return e + "F" + e
		case c == d.Component:
			return e + "S" + e
		case c == d.Subcomponent && c != 0:
			return e + "T" + e
		case c == d.Repetition:
			return e + "R" + e
		case c == d.Escape:
			return e + "E" + e
		case c == d.Truncation && c != 0:
			return e + "P" + e
		case c == '\r':
			return e + "X0D" + e
		case c == '\n':
			return e + "X0A" + e
		}
		return ""
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if r := special(s[i]); r != "" {
			b.WriteString(r)
		} else {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// firstLine returns the header line of a frame.
func firstLine(b []byte) []byte {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		return b[:i]
	}
	return b
}
