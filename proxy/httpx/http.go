// Package httpx masks HTTP/1.1 traffic: FHIR JSON bodies
// (application/fhir+json, application/json) are walked as they stream and
// rewritten by a mask.Profile's FHIR rules, resource ids of pseudonymized
// types and every reference to them alike, so that references stay
// consistent across resources, Bundles and responses.
//
// DICOMweb bodies are masked by the profile's DICOM rules (proxy/dicom):
// PS3.10 files (application/dicom) stream through the DICOM masker, pixel
// data untouched and never held; DICOM JSON (application/dicom+json) is
// masked one data set at a time; multipart/related bodies of those
// (WADO-RS responses, STOW-RS requests) are re-emitted part by part with
// the same boundary, each part with its Content-Type only. A part of any
// other type fails the message. Beside the server, a dicom.Index
// (Config.Index) records the remapped UIDs and pseudonyms that left, and
// request paths and queries naming them are translated back.
//
// It is an HTTP/1.1 codec of its own: persistent connections, pipelined
// requests, Content-Length and chunked bodies, bounded heads. A masked
// body leaves with Content-Length when it is small and chunked otherwise.
// Masking fails closed: a body of another content type, a compressed body,
// or one that is not FHIR JSON is refused with 502 Bad Gateway and an
// error wrapping mask.ErrUnmaskable; a body found bad after part of it was
// sent ends the connection with the body incomplete. The package never
// logs; errors never hold body content.
package httpx

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"

	"github.com/medgate/medgate/proxy/dicom"
	"github.com/medgate/medgate/proxy/mask"
)

// Defaults of Config.
const (
	DefaultMaxHeaderBytes = 64 << 10
	DefaultMaxBody        = 256 << 20
	// smallBody is how much masked output is held before the head goes
	// out: a body that ends within it is sent with Content-Length, and a
	// body found bad within it is answered with 502.
	smallBody = 64 << 10
)

// Config holds the codec's settings. The zero value is ready to use.
type Config struct {
	// MaxHeaderBytes bounds a message's start line and header fields;
	// 0 means DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// MaxBody bounds a masked FHIR body as it arrives; 0 means
	// DefaultMaxBody. DICOMweb bodies stream with bounded memory and have
	// no such bound (each DICOM JSON data set has dicom.MaxJSONDataSet).
	MaxBody int64
	// Now is the clock for the reference year of birth years; nil means
	// time.Now.
	Now func() time.Time
	// Index, when set, records the pseudonyms and remapped UIDs of the
	// DICOMweb bodies masked, and the requests Server carries to the
	// server have those in their paths and queries translated back. It
	// holds PHI of the local jurisdiction: set it only beside the server
	// whose answers are masked. Nil records and restores nothing.
	Index *dicom.Index
}

// Codec masks HTTP/1.1 with one profile. It is safe for concurrent use;
// the filters it returns serve one connection each.
type Codec struct {
	profile *mask.Profile
	fm      *fhirMasker
	dm      *dicom.Masker // nil when the profile has no DICOM rules
	ix      *dicom.Index
	maxHead int
	maxBody int64
}

// New returns a Codec applying p's FHIR rules to FHIR bodies and its
// DICOM rules to DICOMweb bodies; a body whose kind the profile has no
// rules for is refused. It fails when a rule does not parse, when the
// profile has neither kind of rule, or when the profile needs a keyer and
// env has none.
func New(p *mask.Profile, env mask.Env, cfg Config) (*Codec, error) {
	if p == nil {
		return nil, errors.New("httpx: no profile")
	}
	if len(p.FHIR) == 0 && len(p.DICOM) == 0 && !p.DICOMBasic {
		return nil, fmt.Errorf("httpx: profile %s has neither FHIR nor DICOM rules", p.Name)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	fm, err := newFHIRMasker(p, env.Keyer, now().Year())
	if err != nil {
		return nil, err
	}
	c := &Codec{profile: p, fm: fm, ix: cfg.Index, maxHead: cfg.MaxHeaderBytes, maxBody: cfg.MaxBody}
	if len(p.DICOM) > 0 || p.DICOMBasic {
		if c.dm, err = dicom.NewMasker(p, env); err != nil {
			return nil, err
		}
		if c.ix != nil {
			c.dm = c.dm.WithIndex(c.ix)
		}
	}
	if c.maxHead <= 0 {
		c.maxHead = DefaultMaxHeaderBytes
	}
	if c.maxBody <= 0 {
		c.maxBody = DefaultMaxBody
	}
	return c, nil
}

// Errors of the HTTP layer; both wrap mask.ErrUnmaskable in what the
// filters return.
var (
	ErrMalformed   = errors.New("httpx: malformed HTTP message")
	ErrContentType = errors.New("httpx: body of a content type that cannot be masked")
)

// exchange is what the two directions of one connection share: the
// request each response answers.
type exchange struct {
	reqs chan reqInfo
}

type reqInfo struct {
	method, template, vers string
}

// Server returns the filters of a connection to an HTTP server whose
// responses must be masked (the sidecar beside a FHIR server):
// requests carries requests from the peer to the server, unchanged but for
// Accept-Encoding, which becomes identity so that bodies come back
// uncompressed; responses masks the server's responses. Each call gives a
// new pair, for one connection.
func (c *Codec) Server() (requests, responses mask.Filter) {
	x := &exchange{reqs: make(chan reqInfo, 128)}
	return func(dst io.Writer, src io.Reader, back io.Writer, report func(mask.Object)) error {
			return c.run(dst, src, back, report, x, true, false)
		}, func(dst io.Writer, src io.Reader, back io.Writer, report func(mask.Object)) error {
			return c.run(dst, src, back, report, x, false, true)
		}
}

// Date shifts in FHIR move a Patient's dates by the shift of its logical
// id, and need the id before the dates (as servers write resources);
// other resources' dates, and dates met before the id, become their
// year.

// Client returns the filters of a connection from an HTTP client whose
// requests must be masked (the sidecar beside a client that sends
// resources): requests masks request bodies and the ids in request paths;
// responses carries the responses back unchanged. Query strings are not
// masked. Each call gives a new pair, for one connection.
func (c *Codec) Client() (requests, responses mask.Filter) {
	x := &exchange{reqs: make(chan reqInfo, 128)}
	return func(dst io.Writer, src io.Reader, back io.Writer, report func(mask.Object)) error {
			return c.run(dst, src, back, report, x, true, true)
		}, func(dst io.Writer, src io.Reader, back io.Writer, report func(mask.Object)) error {
			return c.run(dst, src, back, report, x, false, false)
		}
}

type field struct{ name, value string }

type head struct {
	request              bool
	method, target, vers string
	status               int
	reason               string
	fields               []field
}

func (h *head) get(name string) string {
	for _, f := range h.fields {
		if strings.EqualFold(f.name, name) {
			return f.value
		}
	}
	return ""
}

func (h *head) del(name string) {
	out := h.fields[:0]
	for _, f := range h.fields {
		if !strings.EqualFold(f.name, name) {
			out = append(out, f)
		}
	}
	h.fields = out
}

func (h *head) set(name, value string) {
	h.del(name)
	h.fields = append(h.fields, field{name, value})
}

func (h *head) appendTo(b []byte) []byte {
	if h.request {
		b = fmt.Appendf(b, "%s %s %s\r\n", h.method, h.target, h.vers)
	} else {
		b = fmt.Appendf(b, "%s %03d %s\r\n", h.vers, h.status, h.reason)
	}
	for _, f := range h.fields {
		b = append(b, f.name...)
		b = append(b, ": "...)
		b = append(b, f.value...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// readHead reads a start line and header fields. It returns io.EOF when
// the stream ends before a message starts.
func readHead(br *bufio.Reader, max int, request bool) (*head, error) {
	var lines []string
	total := 0
	for {
		line, err := br.ReadSlice('\n')
		total += len(line)
		if total > max {
			return nil, malformed("head larger than %d bytes", max)
		}
		if err == bufio.ErrBufferFull {
			return nil, malformed("head line too long")
		}
		if err != nil {
			if err == io.EOF && total == 0 {
				return nil, io.EOF
			}
			if err == io.EOF {
				return nil, malformed("stream ended inside a head")
			}
			return nil, err
		}
		s := strings.TrimRight(string(line), "\r\n")
		if s == "" {
			if len(lines) == 0 {
				continue // a stray line end between messages
			}
			break
		}
		lines = append(lines, s)
	}
	h := &head{request: request}
	parts := strings.SplitN(lines[0], " ", 3)
	if request {
		if len(parts) != 3 || !token(parts[0]) || parts[1] == "" || !httpVersion(parts[2]) {
			return nil, malformed("bad request line")
		}
		h.method, h.target, h.vers = parts[0], parts[1], parts[2]
	} else {
		if len(parts) < 2 || !httpVersion(parts[0]) || len(parts[1]) != 3 {
			return nil, malformed("bad status line")
		}
		n, err := strconv.Atoi(parts[1])
		if err != nil || n < 100 || n > 999 {
			return nil, malformed("bad status code")
		}
		h.vers, h.status = parts[0], n
		if len(parts) == 3 {
			h.reason = parts[2]
		}
	}
	for _, l := range lines[1:] {
		if l[0] == ' ' || l[0] == '\t' {
			return nil, malformed("folded header line")
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || !token(name) {
			return nil, malformed("bad header line")
		}
		h.fields = append(h.fields, field{name, strings.TrimSpace(value)})
	}
	return h, nil
}

func httpVersion(s string) bool { return s == "HTTP/1.1" || s == "HTTP/1.0" }

func token(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

type bodyKind int

const (
	noBody bodyKind = iota
	fixedBody
	chunkedBody
	closeBody
)

// framing decides how h's body is delimited (RFC 9112 section 6.3).
func framing(h *head, reqMethod string) (bodyKind, int64, error) {
	if !h.request && (h.status < 200 || h.status == 204 || h.status == 304 || reqMethod == "HEAD") {
		return noBody, 0, nil
	}
	te, cl := h.get("Transfer-Encoding"), h.get("Content-Length")
	if te != "" {
		if cl != "" {
			return 0, 0, malformed("both Transfer-Encoding and Content-Length")
		}
		if !strings.EqualFold(strings.TrimSpace(te), "chunked") {
			return 0, 0, malformed("transfer coding other than chunked")
		}
		return chunkedBody, 0, nil
	}
	if cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 || !isDigits(cl) {
			return 0, 0, malformed("bad Content-Length")
		}
		for _, f := range h.fields {
			if strings.EqualFold(f.name, "Content-Length") && f.value != cl {
				return 0, 0, malformed("several Content-Length values")
			}
		}
		if n == 0 {
			return noBody, 0, nil
		}
		return fixedBody, n, nil
	}
	if h.request {
		return noBody, 0, nil
	}
	return closeBody, 0, nil
}

// chunkedReader reads a chunked body and its trailer section.
type chunkedReader struct {
	br   *bufio.Reader
	cr   io.Reader
	done bool
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	n, err := c.cr.Read(p)
	if err == io.EOF {
		for {
			line, lerr := c.br.ReadSlice('\n')
			if lerr != nil {
				return n, malformed("chunked body: bad trailer")
			}
			if len(bytes.TrimRight(line, "\r\n")) == 0 {
				break
			}
		}
		c.done = true
	} else if err != nil {
		return n, malformed("chunked body: %v", err)
	}
	return n, err
}

func bodyReader(br *bufio.Reader, kind bodyKind, n int64) io.Reader {
	switch kind {
	case fixedBody:
		return &exactReader{r: io.LimitReader(br, n), left: n}
	case chunkedBody:
		return &chunkedReader{br: br, cr: httputil.NewChunkedReader(br)}
	case closeBody:
		return br
	}
	return bytes.NewReader(nil)
}

// exactReader fails when the stream ends before the declared length.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		return n, malformed("body shorter than its Content-Length")
	}
	return n, err
}

// fhirMediaType reports whether a Content-Type names FHIR JSON or JSON.
func fhirMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	switch mt {
	case "application/fhir+json", "application/json", "application/json+fhir":
		return true
	}
	return false
}

// run carries one direction of a connection: requests when isReq, masked
// when masked.
func (c *Codec) run(dst io.Writer, src io.Reader, back io.Writer, report func(mask.Object), x *exchange, isReq, masked bool) error {
	br := bufio.NewReaderSize(src, 32<<10)
	if isReq {
		defer close(x.reqs)
	}
	for {
		h, err := readHead(br, c.maxHead, isReq)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if errors.Is(err, ErrMalformed) {
				c.refuse(dst, back, isReq)
				return fmt.Errorf("%w (%w)", err, mask.ErrUnmaskable)
			}
			return err
		}
		var info reqInfo
		if isReq {
			info = reqInfo{method: h.method, template: pathTemplate(h.target), vers: h.vers}
			if masked {
				t, ok := c.rewriteTarget(h.target)
				if !ok {
					c.refuse(dst, back, true)
					return fmt.Errorf("%w: a DICOMweb request whose target cannot be masked (%w)", ErrContentType, mask.ErrUnmaskable)
				}
				h.target = t
			} else if c.ix != nil {
				h.target = c.restoreTarget(h.target)
			}
			h.set("Accept-Encoding", "identity")
			if h.get("Upgrade") != "" || h.method == "CONNECT" {
				c.refuse(dst, back, true)
				return fmt.Errorf("%w: upgrade or CONNECT on a masked route (%w)", ErrMalformed, mask.ErrUnmaskable)
			}
			x.reqs <- info
		} else {
			if h.status == 101 {
				c.refuse(dst, back, false)
				return fmt.Errorf("%w: protocol switch on a masked route (%w)", ErrMalformed, mask.ErrUnmaskable)
			}
			if h.status >= 200 {
				var ok bool
				if info, ok = <-x.reqs; !ok {
					return fmt.Errorf("%w: a response without a request (%w)", ErrMalformed, mask.ErrUnmaskable)
				}
			} else {
				info = reqInfo{method: "", template: ""}
			}
		}
		kind, n, err := framing(h, info.method)
		if err != nil {
			c.refuse(dst, back, isReq)
			return fmt.Errorf("%w (%w)", err, mask.ErrUnmaskable)
		}
		body := bodyReader(br, kind, n)
		if !masked {
			if err := c.pass(dst, h, kind, n, body); err != nil {
				return err
			}
		} else if err := c.maskMessage(dst, back, h, kind, body, info, isReq, report); err != nil {
			return err
		}
		if kind == closeBody {
			return nil
		}
	}
}

// pass forwards a message unchanged but for its head's rewrites.
func (c *Codec) pass(dst io.Writer, h *head, kind bodyKind, n int64, body io.Reader) error {
	if _, err := dst.Write(h.appendTo(nil)); err != nil {
		return err
	}
	switch kind {
	case fixedBody, closeBody:
		_, err := io.Copy(dst, body)
		return err
	case chunkedBody:
		cw := httputil.NewChunkedWriter(dst)
		if _, err := io.Copy(cw, body); err != nil {
			return err
		}
		if err := cw.Close(); err != nil {
			return err
		}
		_, err := io.WriteString(dst, "\r\n")
		return err
	}
	return nil
}

// maskMessage masks one message's body and sends it with its head, or
// refuses it.
func (c *Codec) maskMessage(dst, back io.Writer, h *head, kind bodyKind, body io.Reader, info reqInfo, isReq bool, report func(mask.Object)) error {
	obj := mask.Object{Protocol: "http", Operation: strings.TrimSpace(info.method + " " + info.template), Profile: c.profile.Name, ProfileVersion: c.profile.Version}
	for _, name := range []string{"Location", "Content-Location"} {
		if v := h.get(name); v != "" {
			r, ok := c.fm.rewriteRef(v)
			if !ok {
				r = ""
			}
			if ok && c.dm != nil && dicomwebPath(r) {
				if r, ok = c.dm.MaskURL(r); !ok {
					h.del(name)
					continue
				}
			}
			h.set(name, r)
		}
	}
	for _, name := range []string{"Content-MD5", "Digest", "Content-Digest", "Repr-Digest"} {
		h.del(name)
	}
	if kind == noBody {
		sum := sha256.Sum256(nil)
		obj.SHA256 = hex.EncodeToString(sum[:])
		if _, err := dst.Write(h.appendTo(nil)); err != nil {
			return err
		}
		if report != nil && (isReq || h.status >= 200) {
			report(obj)
		}
		return nil
	}
	if ce := h.get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		c.refuse(dst, back, isReq)
		return fmt.Errorf("%w: Content-Encoding %s (%w)", ErrContentType, tokenOnly(ce), mask.ErrUnmaskable)
	}
	ct := h.get("Content-Type")
	if mt, _, _ := mime.ParseMediaType(ct); dicomMediaType(mt) && c.dm != nil {
		return c.maskDICOMMessage(dst, back, h, body, info, isReq, obj, report)
	}
	if !fhirMediaType(ct) || len(c.profile.FHIR) == 0 {
		c.refuse(dst, back, isReq)
		return fmt.Errorf("%w: %s (%w)", ErrContentType, tokenOnly(ct), mask.ErrUnmaskable)
	}
	h.del("Content-Length")
	h.del("Transfer-Encoding")
	h.del("Content-Encoding")
	out := &committer{dst: dst, h: h, chunked: h.vers != "HTTP/1.0" && info.vers != "HTTP/1.0", hash: sha256.New()}
	limited := &limitReader{r: body, left: c.maxBody}
	res, err := c.fm.Walk(out, limited)
	if err == nil {
		_, err = io.Copy(io.Discard, limited)
	}
	if err != nil {
		if !out.committed {
			c.refuse(dst, back, isReq)
		}
		if errors.Is(err, ErrNotFHIR) || errors.Is(err, ErrMalformed) || errors.Is(err, errTooLarge) || errors.Is(err, errTooLargeBuffered) {
			return fmt.Errorf("%w (%w)", err, mask.ErrUnmaskable)
		}
		return err
	}
	if err := out.finish(); err != nil {
		if errors.Is(err, errTooLargeBuffered) {
			return fmt.Errorf("%w (%w)", err, mask.ErrUnmaskable)
		}
		return err
	}
	obj.PatientPseudonym = res.patient
	obj.SHA256 = hex.EncodeToString(out.hash.Sum(nil))
	if report != nil {
		report(obj)
	}
	return nil
}

var (
	errTooLarge         = errors.New("httpx: body larger than the limit")
	errTooLargeBuffered = errors.New("httpx: HTTP/1.0 body larger than the limit")
)

type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			return 0, errTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// committer holds the start of a masked body; past smallBody it sends
// the head and streams the rest chunked (or, for HTTP/1.0, keeps holding
// up to DefaultMaxBody).
type committer struct {
	dst       io.Writer
	h         *head
	chunked   bool
	buf       []byte
	committed bool
	cw        io.WriteCloser
	hash      interface {
		io.Writer
		Sum([]byte) []byte
	}
}

func (c *committer) Write(p []byte) (int, error) {
	c.hash.Write(p)
	if c.committed {
		return c.cw.Write(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) <= smallBody {
		return len(p), nil
	}
	if !c.chunked {
		if len(c.buf) > DefaultMaxBody {
			return 0, errTooLargeBuffered
		}
		return len(p), nil
	}
	c.h.set("Transfer-Encoding", "chunked")
	if _, err := c.dst.Write(c.h.appendTo(nil)); err != nil {
		return 0, err
	}
	c.committed = true
	c.cw = httputil.NewChunkedWriter(c.dst)
	if _, err := c.cw.Write(c.buf); err != nil {
		return 0, err
	}
	c.buf = nil
	return len(p), nil
}

func (c *committer) finish() error {
	if c.committed {
		if err := c.cw.Close(); err != nil {
			return err
		}
		_, err := io.WriteString(c.dst, "\r\n")
		return err
	}
	c.h.set("Content-Length", strconv.Itoa(len(c.buf)))
	_, err := c.dst.Write(append(c.h.appendTo(nil), c.buf...))
	return err
}

// refuse answers with 502 toward the client: on back for a request, on
// dst (the client) for a response.
func (c *Codec) refuse(dst, back io.Writer, isReq bool) {
	w := dst
	if isReq {
		w = back
	}
	if w == nil {
		return
	}
	w.Write(badGateway)
}

var badGateway = func() []byte {
	body := `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","diagnostics":"medgate: refused: the message could not be masked"}]}`
	return []byte("HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/fhir+json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body)
}()

// rewriteTarget rewrites the ids of pseudonymized resource types in a
// request target's path, and the UIDs of a DICOMweb path as the profile
// remaps them. It reports false for a target it cannot mask: a DICOMweb
// path with a segment where a UID belongs that is not one, or a query
// matching on DICOM attributes (their values would leave as they are).
func (c *Codec) rewriteTarget(target string) (string, bool) {
	path, query, hasQuery := strings.Cut(target, "?")
	if r, ok := c.fm.rewriteRef(path); ok {
		path = r
	}
	if c.dm != nil {
		if dicomwebPath(path) {
			r, ok := c.dm.MaskURL(path)
			if !ok {
				return "", false
			}
			path = r
		}
		if hasQuery && queryNamesAttributes(query) {
			return "", false
		}
	}
	if hasQuery {
		return path + "?" + query, true
	}
	return path, true
}

// pathTemplate turns a request target into a template for events: the
// segment after a resource type becomes {id}, after _history {vid}, and
// the query goes. "/fhir/Patient/123/_history/2?x=y" gives
// "/fhir/Patient/{id}/_history/{vid}"; a DICOMweb path's UIDs become
// {study}, {series} and {instance}, and frame lists {frames}.
func pathTemplate(target string) string {
	path, _, _ := strings.Cut(target, "?")
	if i := strings.Index(path, "://"); i >= 0 {
		rest := path[i+3:]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			path = rest[j:]
		} else {
			path = "/"
		}
	}
	orig := strings.Split(path, "/")
	segs := make([]string, len(orig))
	copy(segs, orig)
	for i := 1; i < len(segs); i++ {
		s, prev := orig[i], orig[i-1]
		switch {
		case s == "" || s[0] == '_' || s[0] == '$':
		case dicomwebParams[prev] != "":
			segs[i] = dicomwebParams[prev]
		case prev == "_history":
			segs[i] = "{vid}"
		case resourceTypeName(prev) && !resourceTypeName(s), strings.ContainsAny(s, "0123456789"), !tokenish(s):
			segs[i] = "{id}"
		}
	}
	return strings.Join(segs, "/")
}

// dicomwebParams names the path parameters of DICOMweb (PS3.18 10.3),
// by the segment before them.
var dicomwebParams = map[string]string{"studies": "{study}", "series": "{series}", "instances": "{instance}", "frames": "{frames}", "bulk": "{bulk}"}

func tokenish(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("{}_$-.", c) >= 0) {
			return false
		}
	}
	return len(s) <= 64
}

// tokenOnly keeps a header value fit for an error message.
func tokenOnly(s string) string {
	mt, _, err := mime.ParseMediaType(s)
	if err != nil || len(mt) > 64 {
		return "(unreadable)"
	}
	return mt
}
