package httpx

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// maxPreamble bounds what a multipart body may hold before its first
// delimiter; the preamble is read and dropped.
const maxPreamble = 64 << 10

// multipartReader reads a multipart body (RFC 2046 section 5.1) as it
// streams: each part's header fields, bounded, then its content up to
// the next delimiter, never held whole. It is strict: delimiter lines end
// in CRLF, and a delimiter followed by anything but transport padding and
// CRLF, or "--", is an error rather than content. The preamble and
// epilogue are dropped.
type multipartReader struct {
	br      *bufio.Reader
	dash    []byte // "--" boundary
	delim   []byte // CRLF "--" boundary
	maxHead int
	started bool
	done    bool
	part    *partReader
}

func newMultipartReader(r io.Reader, boundary string, maxHead int) *multipartReader {
	return &multipartReader{
		br:      bufio.NewReaderSize(r, 32<<10),
		dash:    []byte("--" + boundary),
		delim:   []byte("\r\n--" + boundary),
		maxHead: maxHead,
	}
}

// validBoundary reports whether b is a boundary RFC 2046 allows: 1 to 70
// characters of bchars, not ending in a space.
func validBoundary(b string) bool {
	if b == "" || len(b) > 70 || b[len(b)-1] == ' ' {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("'()+_,-./:=? ", c) >= 0) {
			return false
		}
	}
	return true
}

// next skips what is left of the current part and returns the next
// part's header fields and content, or io.EOF after the close delimiter.
func (m *multipartReader) next() ([]field, io.Reader, error) {
	if m.done {
		return nil, nil, io.EOF
	}
	if !m.started {
		m.started = true
		if err := m.preamble(); err != nil {
			return nil, nil, err
		}
	} else {
		if m.part != nil {
			if _, err := io.Copy(io.Discard, m.part); err != nil {
				return nil, nil, err
			}
		}
		if _, err := m.br.Discard(len(m.delim)); err != nil {
			return nil, nil, malformed("multipart: truncated delimiter")
		}
		if err := m.afterBoundary(); err != nil {
			return nil, nil, err
		}
	}
	if m.done {
		return nil, nil, io.EOF
	}
	fields, err := m.head()
	if err != nil {
		return nil, nil, err
	}
	m.part = &partReader{m: m}
	return fields, m.part, nil
}

// preamble drops everything before the first delimiter line.
func (m *multipartReader) preamble() error {
	total := 0
	for {
		line, err := m.br.ReadSlice('\n')
		total += len(line)
		if total > maxPreamble || err == bufio.ErrBufferFull {
			return malformed("multipart: preamble larger than %d bytes", maxPreamble)
		}
		if err != nil {
			return malformed("multipart: no delimiter")
		}
		if rest, ok := bytes.CutPrefix(line, m.dash); ok {
			return m.endOfBoundary(rest)
		}
	}
}

// afterBoundary reads the rest of a delimiter line.
func (m *multipartReader) afterBoundary() error {
	line, err := m.br.ReadSlice('\n')
	if err != nil && !(err == io.EOF && bytes.HasPrefix(line, []byte("--"))) {
		return malformed("multipart: bad delimiter line")
	}
	return m.endOfBoundary(line)
}

// endOfBoundary checks what follows a boundary on its line: "--" for
// the close delimiter (the epilogue is then dropped), or transport
// padding and CRLF.
func (m *multipartReader) endOfBoundary(rest []byte) error {
	if bytes.HasPrefix(rest, []byte("--")) {
		m.done = true
		_, err := io.Copy(io.Discard, m.br)
		return err
	}
	rest = bytes.TrimLeft(rest, " \t")
	if string(rest) != "\r\n" {
		return malformed("multipart: bad delimiter line")
	}
	return nil
}

// head reads a part's header fields.
func (m *multipartReader) head() ([]field, error) {
	var fields []field
	total := 0
	for {
		line, err := m.br.ReadSlice('\n')
		total += len(line)
		if total > m.maxHead || err == bufio.ErrBufferFull {
			return nil, malformed("multipart: part head larger than %d bytes", m.maxHead)
		}
		if err != nil {
			return nil, malformed("multipart: body ended inside a part head")
		}
		if !bytes.HasSuffix(line, []byte("\r\n")) {
			return nil, malformed("multipart: part head line without CRLF")
		}
		l := string(line[:len(line)-2])
		if l == "" {
			return fields, nil
		}
		if l[0] == ' ' || l[0] == '\t' {
			return nil, malformed("multipart: folded part head line")
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || !token(name) {
			return nil, malformed("multipart: bad part head line")
		}
		fields = append(fields, field{name, strings.TrimSpace(value)})
	}
}

// partReader reads one part's content, up to the delimiter that ends it.
type partReader struct {
	m   *multipartReader
	end bool
}

var errPartTruncated = errors.New("httpx: multipart body ended inside a part")

func (p *partReader) Read(b []byte) (int, error) {
	if p.end {
		return 0, io.EOF
	}
	if len(b) == 0 {
		return 0, nil
	}
	m := p.m
	n := min(m.br.Buffered(), m.br.Size())
	for {
		if n < len(m.delim) {
			n = len(m.delim)
		}
		buf, err := m.br.Peek(n)
		if i := bytes.Index(buf, m.delim); i >= 0 {
			if i == 0 {
				p.end = true
				return 0, io.EOF
			}
			k := copy(b, buf[:i])
			m.br.Discard(k)
			return k, nil
		}
		// Bytes that cannot be the start of a delimiter are content.
		if safe := len(buf) - len(m.delim) + 1; safe > 0 {
			k := copy(b, buf[:safe])
			m.br.Discard(k)
			return k, nil
		}
		if err != nil {
			if err == io.EOF {
				return 0, malformed("%v", errPartTruncated)
			}
			return 0, err
		}
		n = len(buf) + 1
	}
}

// guardWriter refuses to write content in which a receiver could find
// a delimiter: LF "--" boundary anywhere, or "--" boundary at the start
// (what a lenient parser takes for a delimiter is refused too).
type guardWriter struct {
	w    io.Writer
	pat  []byte
	tail []byte
}

var errBoundaryInPart = errors.New("httpx: masked part content holds the multipart boundary")

func newGuardWriter(w io.Writer, boundary string) *guardWriter {
	return &guardWriter{w: w, pat: []byte("\n--" + boundary), tail: []byte("\n")}
}

func (g *guardWriter) Write(p []byte) (int, error) {
	joined := append(g.tail, p[:min(len(p), len(g.pat)-1)]...)
	if bytes.Contains(joined, g.pat) || bytes.Contains(p, g.pat) {
		return 0, errBoundaryInPart
	}
	keep := len(g.pat) - 1
	if len(p) >= keep {
		g.tail = append(g.tail[:0], p[len(p)-keep:]...)
	} else {
		joined = append(g.tail, p...)
		g.tail = append(g.tail[:0], joined[max(0, len(joined)-keep):]...)
	}
	return g.w.Write(p)
}
