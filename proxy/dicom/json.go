package dicom

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/medgate/medgate/proxy/mask"
)

// MaxJSONDataSet bounds one top-level data set of a DICOM JSON body as
// MaskJSON reads it; a larger one is refused.
const MaxJSONDataSet = 16 << 20

// MaskJSON masks DICOM JSON (PS3.18 F.2), as QIDO-RS results and WADO-RS
// metadata carry it, from src to dst: an array of data sets, or one data
// set. Each top-level data set is held while it is masked (at most
// MaxJSONDataSet bytes of input), so dates can be shifted by the
// patient's ID whatever the order of the attributes. The rules are those
// of the binary codec, applied to the same attributes; values that JSON
// carries as numbers or binary (US, FL, AT, InlineBinary...) are kept or
// removed whole, never rewritten: any other action empties them. URLs
// (UR values, BulkDataURI) get the UIDs in their path remapped as the
// attributes they name are (MaskURL); a URL that cannot be masked is
// removed. Patient Identity Removed is not added: DICOM JSON describes
// objects, it does not store them.
//
// The object reported has the SHA-256 of what was written, the patient
// pseudonym of the first data set that has one, and the remapped UIDs
// when the body holds a single data set. Anything that is not DICOM JSON
// (unknown element fields, a bad tag or VR, a value of the wrong JSON
// type) is refused with an *Error; what was written by then is masked but
// incomplete.
func (m *Masker) MaskJSON(dst io.Writer, src io.Reader) (mask.Object, error) {
	obj := m.object("")
	h := sha256.New()
	w := io.MultiWriter(dst, h)
	br := &budgetReader{r: src, left: MaxJSONDataSet}
	dec := json.NewDecoder(br)
	dec.UseNumber()
	first, err := dec.Token()
	if err != nil {
		return obj, jsonError(err)
	}
	var out bytes.Buffer
	n := 0
	one := func(delimRead bool) error {
		br.left = MaxJSONDataSet
		if !delimRead {
			t, err := dec.Token()
			if err != nil {
				return jsonError(err)
			}
			if d, ok := t.(json.Delim); !ok || d != '{' {
				return errorf(ReasonMalformedDataSet, "DICOM JSON data set %d is not an object", n)
			}
		}
		ds, err := readJSONDataSet(dec, 0)
		if err != nil {
			return err
		}
		x := &run{m: m, ctx: ctxKnown}
		out.Reset()
		if n > 0 {
			out.WriteByte(',')
		}
		if err := x.jsonDataSet(&out, ds, 0, true); err != nil {
			return err
		}
		if obj.PatientPseudonym == "" {
			obj.PatientPseudonym = x.obj.PatientPseudonym
		}
		if n == 0 {
			obj.StudyUID, obj.SeriesUID, obj.InstanceUID = x.obj.StudyUID, x.obj.SeriesUID, x.obj.InstanceUID
		} else {
			obj.StudyUID, obj.SeriesUID, obj.InstanceUID = "", "", ""
		}
		n++
		_, err = w.Write(out.Bytes())
		return err
	}
	switch first {
	case json.Delim('['):
		if _, err := w.Write([]byte{'['}); err != nil {
			return obj, err
		}
		for dec.More() {
			if err := one(false); err != nil {
				return obj, err
			}
		}
		if _, err := dec.Token(); err != nil {
			return obj, jsonError(err)
		}
		if _, err := w.Write([]byte{']'}); err != nil {
			return obj, err
		}
	case json.Delim('{'):
		if err := one(true); err != nil {
			return obj, err
		}
	default:
		return obj, errorf(ReasonMalformedDataSet, "DICOM JSON is neither an array nor an object")
	}
	br.left = MaxJSONDataSet
	if _, err := dec.Token(); err != io.EOF {
		return obj, errorf(ReasonMalformedDataSet, "data after the DICOM JSON value")
	}
	obj.SHA256 = hex.EncodeToString(h.Sum(nil))
	return obj, nil
}

// budgetReader fails once a data set has read more than its budget.
type budgetReader struct {
	r    io.Reader
	left int
}

var errJSONTooLarge = errorf(ReasonValueTooLarge, "DICOM JSON data set larger than %d bytes", MaxJSONDataSet)

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errJSONTooLarge
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= n
	return n, err
}

// jsonError keeps a decoder error's kind and offset, never the text it
// quotes.
func jsonError(err error) error {
	var de *Error
	if errors.As(err, &de) {
		return de
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return errorf(ReasonMalformedDataSet, "invalid DICOM JSON at byte %d", se.Offset)
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errorf(ReasonTruncated, "DICOM JSON ended early")
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return errorf(ReasonMalformedDataSet, "DICOM JSON field %s of the wrong type", te.Field)
	}
	if strings.HasPrefix(err.Error(), "json: unknown field") {
		return errorf(ReasonMalformedDataSet, "DICOM JSON element with an unknown field")
	}
	return errorf(ReasonMalformedDataSet, "invalid DICOM JSON")
}

// jsonElement is one attribute of a DICOM JSON data set.
type jsonElement struct {
	tag          uint32
	VR           string            `json:"vr"`
	Value        []json.RawMessage `json:"Value"`
	InlineBinary *string           `json:"InlineBinary"`
	BulkDataURI  *string           `json:"BulkDataURI"`
}

type jsonPN struct {
	Alphabetic  *string `json:"Alphabetic"`
	Ideographic *string `json:"Ideographic"`
	Phonetic    *string `json:"Phonetic"`
}

// readJSONDataSet reads the members of a data set object whose '{' was
// read, sorted by tag.
func readJSONDataSet(dec *json.Decoder, depth int) ([]*jsonElement, error) {
	if depth >= maxNestingDepth {
		return nil, errorf(ReasonMalformedDataSet, "sequences nested deeper than %d", maxNestingDepth)
	}
	var ds []*jsonElement
	seen := map[uint32]bool{}
	for {
		t, err := dec.Token()
		if err != nil {
			return nil, jsonError(err)
		}
		if d, ok := t.(json.Delim); ok && d == '}' {
			break
		}
		key, ok := t.(string)
		if !ok || len(key) != 8 {
			return nil, errorf(ReasonMalformedDataSet, "DICOM JSON key is not a tag")
		}
		tag, err := strconv.ParseUint(key, 16, 32)
		if err != nil || seen[uint32(tag)] {
			return nil, errorf(ReasonMalformedDataSet, "DICOM JSON key is not a tag, or repeats one")
		}
		seen[uint32(tag)] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, jsonError(err)
		}
		e := &jsonElement{tag: uint32(tag)}
		ed := json.NewDecoder(bytes.NewReader(raw))
		ed.DisallowUnknownFields()
		ed.UseNumber()
		if err := ed.Decode(e); err != nil {
			return nil, jsonError(err)
		}
		if !knownVR(e.VR) {
			return nil, errorf(ReasonMalformedDataSet, "element %s with an unknown VR", tagString(e.tag))
		}
		forms := 0
		for _, set := range []bool{e.Value != nil, e.InlineBinary != nil, e.BulkDataURI != nil} {
			if set {
				forms++
			}
		}
		if forms > 1 {
			return nil, errorf(ReasonMalformedDataSet, "element %s with more than one of Value, InlineBinary, BulkDataURI", tagString(e.tag))
		}
		ds = append(ds, e)
	}
	slices.SortFunc(ds, func(a, b *jsonElement) int { return cmp.Compare(a.tag, b.tag) })
	return ds, nil
}

// jsonValueText is the text of one value of a string or PN element, as
// the binary codec sees it; ok is false for a value of another JSON type.
func jsonValueText(vr string, raw json.RawMessage) (string, bool) {
	if string(raw) == "null" {
		return "", true
	}
	if vr == "PN" {
		var pn jsonPN
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if dec.Decode(&pn) != nil {
			return "", false
		}
		parts := []string{deref(pn.Alphabetic), deref(pn.Ideographic), deref(pn.Phonetic)}
		return strings.TrimRight(strings.Join(parts, "="), "="), true
	}
	if vr == "IS" || vr == "DS" {
		var n json.Number
		if json.Unmarshal(raw, &n) == nil {
			return n.String(), true
		}
	}
	var s string
	if json.Unmarshal(raw, &s) != nil || strings.Contains(s, `\`) {
		return "", false
	}
	return s, true
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// jsonTextVR reports whether the values of vr are JSON strings (or PN
// objects, or DS and IS numbers) that the rules can rewrite as text.
func jsonTextVR(vr string) bool {
	switch vr {
	case "AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT":
		return true
	}
	return false
}

func (x *run) jsonDataSet(out *bytes.Buffer, ds []*jsonElement, depth int, top bool) error {
	if top {
		for _, e := range ds {
			if e.tag != tagPatientID && (e.tag != tagPatientName || !x.m.needContext) {
				continue
			}
			if v, ok := x.jsonText(e); ok {
				x.capture(e.tag, []byte(v))
			}
		}
	}
	out.WriteByte('{')
	first := true
	for _, e := range ds {
		if e.tag&0xFFFF == 0 {
			continue
		}
		mark := out.Len()
		if !first {
			out.WriteByte(',')
		}
		fmt.Fprintf(out, `"%08X":`, e.tag)
		kept, err := x.jsonElement(out, e, depth, top)
		if err != nil {
			return err
		}
		if !kept {
			out.Truncate(mark)
			continue
		}
		first = false
	}
	out.WriteByte('}')
	return nil
}

// jsonText joins the values of a text element as the binary codec would
// hold them.
func (x *run) jsonText(e *jsonElement) (string, bool) {
	if !jsonTextVR(e.VR) || e.Value == nil {
		return "", false
	}
	vals := make([]string, len(e.Value))
	for i, raw := range e.Value {
		v, ok := jsonValueText(e.VR, raw)
		if !ok {
			return "", false
		}
		vals[i] = v
	}
	return strings.Join(vals, `\`), true
}

// jsonElement writes one masked element's value object; kept is false
// when the element goes.
func (x *run) jsonElement(out *bytes.Buffer, e *jsonElement, depth int, top bool) (kept bool, err error) {
	vr := e.VR
	sem := vr
	if vr == "UN" {
		if d := dictVR(e.tag); d != "" {
			sem = d
		}
	}
	rl := x.m.ruleFor(e.tag, sem, x.stack)
	empty := func() (bool, error) {
		out.WriteString(`{"vr":"` + vr + `"}`)
		return true, nil
	}
	if top && (e.tag == tagStudyUID || e.tag == tagSeriesUID || e.tag == tagSOPInstance) {
		if v, ok := x.jsonText(e); ok && strings.TrimSpace(v) != "" {
			x.reportUID(e.tag, strings.TrimSpace(v))
		}
	}
	switch rl.act {
	case actRemove:
		return false, nil
	case actEmpty:
		return empty()
	}
	if vr == "SQ" {
		if rl.act == actReplace {
			out.WriteString(`{"vr":"SQ","Value":[{}]}`)
			return true, nil
		}
		if e.InlineBinary != nil || e.BulkDataURI != nil {
			return false, errorf(ReasonMalformedDataSet, "sequence %s with binary data", tagString(e.tag))
		}
		if e.Value == nil {
			return empty()
		}
		x.stack = append(x.stack, e.tag)
		defer func() { x.stack = x.stack[:len(x.stack)-1] }()
		out.WriteString(`{"vr":"SQ","Value":[`)
		for i, raw := range e.Value {
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			if t, err := dec.Token(); err != nil || t != json.Delim('{') {
				return false, errorf(ReasonMalformedDataSet, "item %d of sequence %s is not an object", i, tagString(e.tag))
			}
			items, err := readJSONDataSet(dec, depth+1)
			if err != nil {
				return false, err
			}
			if i > 0 {
				out.WriteByte(',')
			}
			if err := x.jsonDataSet(out, items, depth+1, false); err != nil {
				return false, err
			}
		}
		out.WriteString(`]}`)
		return true, nil
	}
	switch {
	case e.BulkDataURI != nil:
		if rl.act != actKeep {
			return empty()
		}
		u, ok := x.maskURL(*e.BulkDataURI)
		if !ok {
			return empty()
		}
		out.WriteString(`{"vr":"` + vr + `","BulkDataURI":`)
		writeJSONString(out, u)
		out.WriteString(`}`)
		return true, nil
	case e.InlineBinary != nil:
		if rl.act != actKeep {
			return empty()
		}
		out.WriteString(`{"vr":"` + vr + `","InlineBinary":`)
		writeJSONString(out, *e.InlineBinary)
		out.WriteString(`}`)
		return true, nil
	case e.Value == nil:
		return empty()
	}
	text, isText := x.jsonText(e)
	if !isText {
		if !jsonTextVR(vr) && !slices.ContainsFunc(e.Value, func(r json.RawMessage) bool { return len(r) == 0 || r[0] == '{' || r[0] == '[' }) && rl.act == actKeep {
			return x.writeRawValues(out, vr, e.Value)
		}
		if jsonTextVR(vr) {
			return false, errorf(ReasonMalformedDataSet, "element %s has a value of the wrong JSON type", tagString(e.tag))
		}
		return empty()
	}
	if rl.act == actKeep && vr != "UR" {
		return x.writeRawValues(out, vr, e.Value)
	}
	var vals []string
	if rl.act == actKeep { // UR
		u, ok := x.maskURL(text)
		if !ok {
			return empty()
		}
		vals = []string{u}
	} else {
		res, drop := x.transform(e.tag, sem, rl, []byte(text))
		if drop {
			return false, nil
		}
		s := strings.TrimRight(string(res), " \x00")
		if s == "" {
			return empty()
		}
		if vr == "UR" || vr == "UT" || vr == "LT" || vr == "ST" {
			vals = []string{s}
		} else {
			vals = strings.Split(s, `\`)
		}
	}
	out.WriteString(`{"vr":"` + vr + `","Value":[`)
	for i, v := range vals {
		if i > 0 {
			out.WriteByte(',')
		}
		v = strings.TrimSpace(strings.TrimRight(v, "\x00"))
		switch {
		case v == "":
			out.WriteString("null")
		case vr == "PN":
			comps := strings.SplitN(v, "=", 3)
			out.WriteByte('{')
			for j, name := range []string{"Alphabetic", "Ideographic", "Phonetic"} {
				if j >= len(comps) || comps[j] == "" {
					continue
				}
				if out.Bytes()[out.Len()-1] != '{' {
					out.WriteByte(',')
				}
				out.WriteString(`"` + name + `":`)
				writeJSONString(out, comps[j])
			}
			out.WriteByte('}')
		case vr == "IS" || vr == "DS":
			if _, err := strconv.ParseFloat(v, 64); err != nil || !json.Valid([]byte(v)) {
				out.WriteString("null")
			} else {
				out.WriteString(v)
			}
		default:
			writeJSONString(out, v)
		}
	}
	out.WriteString(`]}`)
	return true, nil
}

func (x *run) writeRawValues(out *bytes.Buffer, vr string, vals []json.RawMessage) (bool, error) {
	out.WriteString(`{"vr":"` + vr + `","Value":[`)
	for i, v := range vals {
		if i > 0 {
			out.WriteByte(',')
		}
		if err := json.Compact(out, v); err != nil {
			return false, errorf(ReasonMalformedDataSet, "invalid DICOM JSON value")
		}
	}
	out.WriteString(`]}`)
	return true, nil
}

func writeJSONString(out *bytes.Buffer, s string) {
	b, _ := json.Marshal(s)
	out.Write(b)
}

// MaskURL masks a DICOMweb URL as the attributes it names are masked: a
// path segment after "studies", "series" or "instances" is that UID, and
// is remapped (and recorded in the index) when the profile remaps it, kept
// when the profile keeps it. It reports false for a URL it cannot mask
// safely: one with a query or fragment, a segment there that is not a
// UID, or one the profile removes. Safe for concurrent use.
func (m *Masker) MaskURL(u string) (string, bool) {
	x := &run{m: m, ctx: ctxKnown}
	return x.maskURL(u)
}

func (x *run) maskURL(u string) (string, bool) {
	if strings.ContainsAny(u, "?#") {
		return "", false
	}
	segs := strings.Split(u, "/")
	for i := 1; i < len(segs); i++ {
		var tag uint32
		switch segs[i-1] {
		case "studies":
			tag = tagStudyUID
		case "series":
			tag = tagSeriesUID
		case "instances":
			tag = tagSOPInstance
		default:
			continue
		}
		if segs[i] == "" {
			continue
		}
		if !uidText(segs[i]) {
			return "", false
		}
		switch x.m.ruleFor(tag, "UI", nil).act {
		case actKeep:
		case actUID, actPseudonym:
			segs[i] = trimValue(x.uids([]byte(segs[i])))
		default:
			return "", false
		}
	}
	return strings.Join(segs, "/"), true
}

// uidText reports whether s has the characters of a UID.
func uidText(s string) bool {
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' {
			return false
		}
	}
	return s != "" && len(s) <= 64
}

// Original returns what a pseudonym or remapped UID recorded in the index
// stands for. Its result is PHI of the local jurisdiction: it must not
// leave, nor be logged.
func (ix *Index) Original(masked string) (string, bool) { return ix.get(masked) }
