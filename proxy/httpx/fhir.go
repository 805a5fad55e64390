package httpx

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/medgate/medgate/crypto/pseudonym"
	"github.com/medgate/medgate/proxy/mask"
)

// ErrNotFHIR is wrapped by every error of the FHIR walker: the body is not
// JSON, or not FHIR resources it can mask safely.
var ErrNotFHIR = errors.New("httpx: not a FHIR JSON body that can be masked")

// maxDepth bounds the nesting of JSON the walker follows.
const maxDepth = 128

// defaultReplacement is what replace writes when its rule has no value.
const defaultReplacement = "REDACTED"

type frule struct {
	path  mask.FHIRPath
	act   mask.Action
	value string
	order int
	named int // elements that are not wildcards
}

// better reports whether r decides over o (nil o loses): the deeper rule,
// then the one naming its resource type, then the one naming more
// elements, then the later one.
func (r *frule) better(o *frule) bool {
	switch {
	case o == nil:
		return true
	case len(r.path.Elements) != len(o.path.Elements):
		return len(r.path.Elements) > len(o.path.Elements)
	case (r.path.Resource != "*") != (o.path.Resource != "*"):
		return r.path.Resource != "*"
	case r.named != o.named:
		return r.named > o.named
	}
	return r.order > o.order
}

// matches reports whether r selects the element at path (element names
// from the resource down) of a resource of type typ, or an ancestor of it.
func (r *frule) matches(typ string, path []string) bool {
	if r.path.Resource != "*" && r.path.Resource != typ {
		return false
	}
	if len(r.path.Elements) > len(path) {
		return false
	}
	for i, e := range r.path.Elements {
		if e != "*" && e != path[i] {
			return false
		}
	}
	return true
}

// fhirMasker applies a profile's FHIR rules. It is safe for concurrent use.
type fhirMasker struct {
	rules []frule
	// idKinds names the resource types whose ids become pseudonyms (a
	// rule "Type.id" with action pseudonym), with the pseudonym kind:
	// references to them are rewritten to match.
	idKinds map[string]string
	keyer   *pseudonym.Keyer
	refYear int

	decisions sync.Map // resource type and path -> *frule (nil: no rule)
	cached    atomic.Int64
}

func newFHIRMasker(p *mask.Profile, keyer *pseudonym.Keyer, refYear int) (*fhirMasker, error) {
	m := &fhirMasker{idKinds: map[string]string{}, keyer: keyer, refYear: refYear}
	for i, r := range p.FHIR {
		path, err := mask.ParseFHIRPath(r.Field)
		if err != nil {
			return nil, fmt.Errorf("httpx: profile %s: fhir[%d]: %w", p.Name, i, err)
		}
		switch r.Action {
		case mask.Pseudonym, mask.DateShift, mask.UIDRemap:
			if keyer == nil {
				return nil, errors.New("httpx: the profile pseudonymizes, shifts dates or remaps UIDs, and the environment has no keyer")
			}
		case mask.Remove, mask.Empty, mask.Replace, mask.Generalize, mask.Keep:
		default:
			return nil, fmt.Errorf("httpx: profile %s: fhir[%d]: unknown action %q", p.Name, i, r.Action)
		}
		fr := frule{path: path, act: r.Action, value: r.Value, order: i}
		for _, e := range path.Elements {
			if e != "*" {
				fr.named++
			}
		}
		m.rules = append(m.rules, fr)
		if r.Action == mask.Pseudonym && path.Resource != "*" && len(path.Elements) == 1 && path.Elements[0] == "id" {
			kind := r.Value
			if kind == "" {
				kind = pseudonym.KindOther
			}
			m.idKinds[path.Resource] = kind
		}
	}
	return m, nil
}

// maxDecisions bounds the cache of decisions by resource type and path.
const maxDecisions = 1 << 16

func (m *fhirMasker) decide(typ string, path []string) *frule {
	key := typ + "." + strings.Join(path, ".")
	if r, ok := m.decisions.Load(key); ok {
		return r.(*frule)
	}
	best := m.decideSlow(typ, path)
	if m.cached.Add(1) <= maxDecisions {
		m.decisions.Store(key, best)
	}
	return best
}

func (m *fhirMasker) decideSlow(typ string, path []string) *frule {
	var best *frule
	for i := range m.rules {
		r := &m.rules[i]
		if r.matches(typ, path) && r.better(best) {
			best = r
		}
	}
	return best
}

// idToken is the pseudonym of the logical id of a resource of type typ.
func (m *fhirMasker) idToken(typ, id string) string {
	return m.keyer.Token(m.idKinds[typ], typ+"/"+id)
}

// rewriteRef rewrites the ids of pseudonymized resource types in a
// reference or URL ("Patient/123", "http://host/fhir/Patient/123/_history/2").
// It reports false for a reference it cannot rewrite safely: a
// conditional reference or search URL on such a type.
func (m *fhirMasker) rewriteRef(s string) (string, bool) {
	if len(m.idKinds) == 0 || s == "" || s[0] == '#' || strings.HasPrefix(s, "urn:") {
		return s, true
	}
	path, query, hasQuery := strings.Cut(s, "?")
	segs := strings.Split(path, "/")
	changed := false
	for i := 0; i < len(segs); i++ {
		if _, ok := m.idKinds[segs[i]]; !ok {
			continue
		}
		if i+1 == len(segs) || segs[i+1] == "" {
			if hasQuery {
				return "", false
			}
			continue
		}
		if id := segs[i+1]; id[0] != '_' && id[0] != '$' {
			segs[i+1] = m.idToken(segs[i], id)
			changed = true
			i++
		}
	}
	if !changed {
		return s, true
	}
	out := strings.Join(segs, "/")
	if hasQuery {
		out += "?" + query
	}
	return out, true
}

// walkResult is what the walker learned of a body.
type walkResult struct {
	resourceType string // of the root
	patient      string // pseudonym of the first patient identifier, or of the first Patient id
}

// walker masks one JSON body as it streams.
type walker struct {
	m   *fhirMasker
	dec *json.Decoder
	w   *bufio.Writer
	res walkResult
}

type frame struct {
	typ        string   // resource type
	path       []string // element names from the resource
	key        string   // property name of this value
	parentKey  string
	decision   *frule
	patientKey string
}

// Walk reads one FHIR JSON resource from src and writes it masked to dst.
// A body that is not a JSON object with resourceType as the first
// property of every resource, or that nests deeper than maxDepth, or has
// data after the object, fails with an error wrapping ErrNotFHIR; what was
// written to dst by then is masked, but incomplete.
func (m *fhirMasker) Walk(dst io.Writer, src io.Reader) (walkResult, error) {
	wk := &walker{m: m, dec: json.NewDecoder(src), w: bufio.NewWriterSize(dst, 32<<10)}
	wk.dec.UseNumber()
	tok, err := wk.dec.Token()
	if err != nil {
		return wk.res, notFHIR("body: %v", syntaxOnly(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return wk.res, notFHIR("body is not a JSON object")
	}
	if err := wk.object(&frame{}, 1); err != nil {
		return wk.res, err
	}
	if _, err := wk.dec.Token(); err != io.EOF {
		return wk.res, notFHIR("data after the resource")
	}
	if err := wk.w.Flush(); err != nil {
		return wk.res, err
	}
	return wk.res, nil
}

func notFHIR(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrNotFHIR}, args...)...)
}

// syntaxOnly keeps a decoder error's kind and offset, never the text it
// quotes from the body.
func syntaxOnly(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return "invalid JSON at byte " + strconv.FormatInt(se.Offset, 10)
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return "unexpected end of JSON"
	}
	return "invalid JSON"
}

func (wk *walker) token() (json.Token, error) {
	t, err := wk.dec.Token()
	if err != nil {
		return nil, notFHIR("%s", syntaxOnly(err))
	}
	return t, nil
}

// object masks the members of an object whose '{' was read. The object is
// a resource when its first property is resourceType; the root must be one.
func (wk *walker) object(parent *frame, depth int) error {
	if depth > maxDepth {
		return notFHIR("nested deeper than %d", maxDepth)
	}
	wk.w.WriteByte('{')
	cur := parent
	first := true
	for n := 0; ; n++ {
		t, err := wk.token()
		if err != nil {
			return err
		}
		if d, ok := t.(json.Delim); ok && d == '}' {
			if n == 0 && parent.typ == "" {
				return notFHIR("a resource without resourceType")
			}
			wk.w.WriteByte('}')
			return nil
		}
		key, ok := t.(string)
		if !ok {
			return notFHIR("invalid JSON object")
		}
		if key == "resourceType" {
			if n != 0 {
				return notFHIR("resourceType is not the first property of its resource")
			}
			v, err := wk.token()
			if err != nil {
				return err
			}
			typ, ok := v.(string)
			if !ok || !resourceTypeName(typ) {
				return notFHIR("resourceType is not a resource type name")
			}
			if wk.res.resourceType == "" {
				wk.res.resourceType = typ
			}
			cur = &frame{typ: typ}
			wk.w.WriteString(`"resourceType":`)
			writeString(wk.w, typ)
			first = false
			continue
		}
		if n == 0 && parent.typ == "" {
			return notFHIR("resourceType is not the first property of the resource")
		}
		name := strings.TrimPrefix(key, "_")
		path := append(cur.path[:len(cur.path):len(cur.path)], name)
		child := &frame{typ: cur.typ, path: path, key: key, parentKey: cur.key, decision: wk.m.decide(cur.typ, path), patientKey: cur.patientKey}
		if err := wk.member(key, child, &first, depth); err != nil {
			return err
		}
		if cur.typ == "Patient" && key == "id" && cur.patientKey == "" {
			cur.patientKey = child.patientKey
		}
	}
}

// member masks one property: it reads the value's first token, and writes
// the key only when something of the value stays.
func (wk *walker) member(key string, f *frame, first *bool, depth int) error {
	if f.decision != nil && (f.decision.act == mask.Remove || f.decision.act == mask.Empty) {
		return wk.skip()
	}
	if strings.HasPrefix(key, "_") && f.decision != nil && f.decision.act != mask.Keep {
		// The extensions of a primitive that is transformed would
		// describe the value it no longer has.
		return wk.skip()
	}
	t, err := wk.token()
	if err != nil {
		return err
	}
	writeKey := func() {
		if !*first {
			wk.w.WriteByte(',')
		}
		*first = false
		writeString(wk.w, key)
		wk.w.WriteByte(':')
	}
	if d, ok := t.(json.Delim); ok {
		writeKey()
		if d == '{' {
			return wk.object(f, depth+1)
		}
		if d == '[' {
			return wk.array(f, depth+1)
		}
		return notFHIR("invalid JSON")
	}
	out, keep := wk.leaf(t, f)
	if keep {
		writeKey()
		wk.w.WriteString(out)
	}
	return nil
}

func (wk *walker) array(f *frame, depth int) error {
	if depth > maxDepth {
		return notFHIR("nested deeper than %d", maxDepth)
	}
	wk.w.WriteByte('[')
	first := true
	for {
		t, err := wk.token()
		if err != nil {
			return err
		}
		sep := func() {
			if !first {
				wk.w.WriteByte(',')
			}
			first = false
		}
		switch d, _ := t.(json.Delim); d {
		case ']':
			wk.w.WriteByte(']')
			return nil
		case '{':
			sep()
			if err := wk.object(f, depth+1); err != nil {
				return err
			}
		case '[':
			sep()
			if err := wk.array(f, depth+1); err != nil {
				return err
			}
		default:
			if out, keep := wk.leaf(t, f); keep {
				sep()
				wk.w.WriteString(out)
			}
		}
	}
}

// skip consumes one value.
func (wk *walker) skip() error {
	level := 0
	for {
		t, err := wk.token()
		if err != nil {
			return err
		}
		switch d, _ := t.(json.Delim); d {
		case '{', '[':
			level++
		case '}', ']':
			level--
		}
		if level == 0 {
			return nil
		}
	}
}

// leaf masks a primitive and returns its JSON text, or false when it goes.
func (wk *walker) leaf(t json.Token, f *frame) (string, bool) {
	m := wk.m
	s, isString := t.(string)
	if isString {
		if f.key == "reference" || f.key == "fullUrl" || f.key == "location" || f.key == "url" && f.parentKey == "request" {
			var ok bool
			if s, ok = m.rewriteRef(s); !ok {
				return "", false
			}
		}
		if len(f.path) == 1 && f.key == "id" {
			if _, ok := m.idKinds[f.typ]; ok {
				if f.typ == "Patient" {
					f.patientKey = s
				}
				tok := m.idToken(f.typ, s)
				if wk.res.patient == "" && f.typ == "Patient" {
					wk.res.patient = tok
				}
				return quote(tok), true
			}
		}
	}
	r := f.decision
	if r == nil || r.act == mask.Keep {
		if isString {
			return quote(s), true
		}
		return literal(t), true
	}
	if !isString {
		if r.act == mask.Generalize {
			if n, ok := t.(json.Number); ok {
				if g, ok := mask.GeneralizeValue(r.value, n.String(), m.refYear); ok && g != "" && isDigits(g) {
					return g, true
				}
			}
		}
		return "", false
	}
	switch r.act {
	case mask.Replace:
		if r.value == "" {
			return quote(defaultReplacement), true
		}
		return quote(r.value), true
	case mask.Pseudonym:
		kind := r.value
		if kind == "" {
			kind = pseudonym.KindOther
		}
		tok := m.keyer.Token(kind, strings.TrimSpace(s))
		if kind == pseudonym.KindPatientID && wk.res.patient == "" {
			wk.res.patient = tok
		}
		return quote(tok), true
	case mask.DateShift:
		if f.patientKey != "" && len(s) >= 10 && s[4] == '-' && s[7] == '-' {
			if sh, err := m.keyer.ShiftDate(f.patientKey, s[:4]+s[5:7]+s[8:10]); err == nil {
				return quote(sh[:4] + "-" + sh[4:6] + "-" + sh[6:8] + s[10:]), true
			}
		}
		if y, ok := mask.GeneralizeValue(mask.GeneralizeYear, s, 0); ok && y != "" {
			return quote(y), true
		}
		return "", false
	case mask.UIDRemap:
		if oid, ok := strings.CutPrefix(s, "urn:oid:"); ok {
			return quote("urn:oid:" + m.keyer.UID(oid)), true
		}
		return quote(m.keyer.UID(s)), true
	case mask.Generalize:
		if g, ok := mask.GeneralizeValue(r.value, s, m.refYear); ok && g != "" {
			return quote(g), true
		}
	}
	return "", false
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func resourceTypeName(s string) bool {
	if s == "" || len(s) > 64 || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func literal(t json.Token) string {
	switch v := t.(type) {
	case json.Number:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return "null"
	}
	return "null"
}

func quote(s string) string {
	var b strings.Builder
	appendString(&b, s)
	return b.String()
}

func writeString(w *bufio.Writer, s string) { w.WriteString(quote(s)) }

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string, escaping only what JSON requires
// (and U+2028, U+2029).
func appendString(b *strings.Builder, s string) {
	b.WriteByte('"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < 0x80 {
			i++
			continue
		}
		if c < 0x80 {
			b.WriteString(s[start:i])
			switch c {
			case '"', '\\':
				b.WriteByte('\\')
				b.WriteByte(c)
			case '\n':
				b.WriteString(`\n`)
			case '\r':
				b.WriteString(`\r`)
			case '\t':
				b.WriteString(`\t`)
			default:
				b.WriteString(`\u00`)
				b.WriteByte(hexDigits[c>>4])
				b.WriteByte(hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		if strings.HasPrefix(s[i:], "\u2028") || strings.HasPrefix(s[i:], "\u2029") {
			b.WriteString(s[start:i])
			b.WriteString(`\u202`)
			b.WriteByte(hexDigits[s[i+2]&0xf])
			i += 3
			start = i
			continue
		}
		i++
	}
	b.WriteString(s[start:])
	b.WriteByte('"')
}
