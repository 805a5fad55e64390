package dicom

import (
	"bufio"
	"cmp"
	"io"
	"slices"

	"github.com/medgate/medgate/crypto/pseudonym"
	"github.com/medgate/medgate/proxy/mask"
)

// maxHeld bounds what a data set run holds back while it waits for the
// patient's ID (dates before it are shifted by a key derived from it).
// Past it the run gives up waiting: dates it held are emptied and
// descriptors removed, as if the patient were unknown.
const maxHeld = 8 << 20

// context states of a run.
const (
	ctxCollecting = iota // the patient's ID may still come: contextual output is held back
	ctxKnown             // past the patient's ID (which may be absent)
	ctxGaveUp            // held back too much: contextual actions fall back
)

// segment is a piece of held-back output: bytes, or an element whose
// value depends on the patient context.
type segment struct {
	b []byte
	d *deferred
}

type deferred struct {
	s      syntax
	tag    uint32
	wireVR string
	vr     string
	rl     rule
	v      []byte
}

// run masks one data set.
type run struct {
	m       *Masker
	d       *decoder
	w       io.Writer
	query   bool // an identifier of a C-FIND, C-GET or C-MOVE request: wildcards and ranges
	addDeid bool // a stored object: add the de-identification attributes

	stack     []uint32 // tags of the sequences around the current element
	ins       []pendingInsert
	insTags   map[uint32]bool
	ctx       int
	segs      []segment
	held      int
	patientID string
	hasID     bool
	terms     []string
	obj       mask.Object
	hdr       []byte
}

// maskDataSet reads a data set encoded in s from r until r ends and writes
// it masked to w. It fills obj's UIDs and patient pseudonym.
func (m *Masker) maskDataSet(w io.Writer, r *bufio.Reader, s syntax, query, addDeid bool, obj *mask.Object) error {
	x := &run{m: m, d: &decoder{r: r}, w: w, query: query, addDeid: addDeid && m.deidentify}
	if !m.needContext {
		x.ctx = ctxKnown
	}
	if x.addDeid {
		x.planInserts()
	}
	if err := x.dataset(s, -1, 0, true); err != nil {
		return err
	}
	if err := x.resolve(ctxKnown); err != nil {
		return err
	}
	if err := x.insertBefore(s, 0xFFFFFFFF); err != nil {
		return err
	}
	obj.StudyUID, obj.SeriesUID, obj.InstanceUID, obj.PatientPseudonym =
		x.obj.StudyUID, x.obj.SeriesUID, x.obj.InstanceUID, x.obj.PatientPseudonym
	return nil
}

func (x *run) emit(b []byte) error {
	if x.ctx != ctxCollecting {
		_, err := x.w.Write(b)
		return err
	}
	if n := len(x.segs); n > 0 && x.segs[n-1].d == nil {
		x.segs[n-1].b = append(x.segs[n-1].b, b...)
	} else {
		x.segs = append(x.segs, segment{b: append([]byte(nil), b...)})
	}
	x.held += len(b)
	if x.held > maxHeld {
		return x.resolve(ctxGaveUp)
	}
	return nil
}

func (x *run) emitHeader(s syntax, tag uint32, vr string, length uint32) error {
	x.hdr = s.appendHeader(x.hdr[:0], tag, vr, length)
	return x.emit(x.hdr)
}

func (x *run) emitElement(s syntax, tag uint32, vr string, v []byte) error {
	if err := x.emitHeader(s, tag, vr, uint32(len(v))); err != nil {
		return err
	}
	return x.emit(v)
}

// streamValue passes n bytes of value through: straight to w, or held
// back in pieces while the run waits for the patient context.
func (x *run) streamValue(n uint32) error {
	var buf []byte
	for n > 0 && x.ctx == ctxCollecting {
		if buf == nil {
			buf = make([]byte, min(n, copyChunk))
		}
		c := min(n, uint32(len(buf)))
		if err := x.d.full(buf[:c]); err != nil {
			return x.d.truncated(err, "element value")
		}
		if err := x.emit(buf[:c]); err != nil {
			return err
		}
		n -= c
	}
	if n == 0 {
		return nil
	}
	return x.d.copyN(x.w, n)
}

// resolve ends the wait for the patient context and writes what was held.
func (x *run) resolve(state int) error {
	if x.ctx != ctxCollecting {
		return nil
	}
	x.ctx = state
	segs := x.segs
	x.segs, x.held = nil, 0
	for _, sg := range segs {
		if sg.d == nil {
			if _, err := x.w.Write(sg.b); err != nil {
				return err
			}
			continue
		}
		d := sg.d
		out, drop := x.contextual(d.tag, d.vr, d.rl, d.v)
		if drop {
			continue
		}
		if err := x.emitElement(d.s, d.tag, d.wireVR, out); err != nil {
			return err
		}
	}
	return nil
}

// dataset walks elements until end (a byte offset; -1 for an undefined
// length) or, at the top level, until the stream ends.
func (x *run) dataset(s syntax, end int64, depth int, top bool) error {
	for {
		if end >= 0 {
			if x.d.pos == end {
				return nil
			}
			if x.d.pos > end {
				return errorf(ReasonMalformedDataSet, "element overruns its item at offset %d", x.d.pos)
			}
		}
		h, err := x.d.header(s)
		if err == io.EOF {
			if top {
				return nil
			}
			return errorf(ReasonTruncated, "data set ended inside an item at offset %d", x.d.pos)
		}
		if err != nil {
			return err
		}
		switch h.tag {
		case tagItemDelim:
			if end >= 0 || top || h.length != 0 {
				return errorf(ReasonMalformedDataSet, "stray item delimiter at offset %d", x.d.pos)
			}
			return nil
		case tagItem, tagSeqDelim:
			return errorf(ReasonMalformedDataSet, "stray item or sequence delimiter at offset %d", x.d.pos)
		}
		if err := x.element(s, h, depth, top); err != nil {
			return err
		}
	}
}

// semanticVR is the VR an element's value is read as: its explicit VR, or
// the dictionary's for implicit VR and for UN.
func semanticVR(s syntax, h header) string {
	if s.explicit && h.vr != "UN" {
		return h.vr
	}
	if vr := dictVR(h.tag); vr != "" {
		return vr
	}
	return "UN"
}

func (x *run) element(s syntax, h header, depth int, top bool) error {
	k, inner, err := classify(s, h)
	if err != nil {
		return err
	}
	if top {
		if x.ctx == ctxCollecting && h.tag > tagPatientID {
			if err := x.resolve(ctxKnown); err != nil {
				return err
			}
		}
		if err := x.insertBefore(s, h.tag); err != nil {
			return err
		}
	}
	// Group lengths would be wrong once values change; the attributes the
	// profile sets itself are written anew.
	if h.tag&0xFFFF == 0 || (top && x.insTags[h.tag]) {
		return x.skip(s, h, k, inner, depth)
	}
	vr := semanticVR(s, h)
	rl := x.m.ruleFor(h.tag, vr, x.stack)
	if x.query && rl.act == actReplace {
		// A dummy value in a query would match nothing: an empty one
		// matches anything and asks for the attribute back.
		rl.act = actEmpty
	}
	switch k {
	case kindSequence:
		return x.sequence(s, h, inner, rl, depth)
	case kindEncapsulated:
		return x.encapsulated(s, h, rl)
	}
	return x.value(s, h, vr, rl, top)
}

func (x *run) skip(s syntax, h header, k kind, inner syntax, depth int) error {
	switch k {
	case kindSequence:
		return x.skipSequence(inner, h, depth)
	case kindEncapsulated:
		return x.skipEncapsulated(s)
	}
	return x.d.discard(h.length)
}

func (x *run) value(s syntax, h header, vr string, rl rule, top bool) error {
	capture := top && (h.tag == tagPatientID || (h.tag == tagPatientName && x.m.needContext))
	reported := top && (h.tag == tagStudyUID || h.tag == tagSeriesUID || h.tag == tagSOPInstance)
	needValue := capture || reported
	switch rl.act {
	case actPseudonym, actDateShift, actUID, actGeneralize, actRestore:
		needValue = true
	case actClean:
		needValue = needValue || textVR(vr)
	}
	if !needValue {
		switch rl.act {
		case actRemove:
			return x.d.discard(h.length)
		case actEmpty:
			if err := x.d.discard(h.length); err != nil {
				return err
			}
			return x.emitHeader(s, h.tag, h.vr, 0)
		case actReplace:
			if err := x.d.discard(h.length); err != nil {
				return err
			}
			return x.emitElement(s, h.tag, h.vr, pad(vr, dummy(vr, rl.value)))
		}
		if err := x.emitHeader(s, h.tag, h.vr, h.length); err != nil {
			return err
		}
		return x.streamValue(h.length)
	}
	v, err := x.d.value(h)
	if err != nil {
		return err
	}
	if capture {
		x.capture(h.tag, v)
	}
	var out []byte
	drop := false
	if (rl.act == actDateShift || (rl.act == actClean && textVR(vr))) && x.ctx == ctxCollecting {
		x.segs = append(x.segs, segment{d: &deferred{s: s, tag: h.tag, wireVR: h.vr, vr: vr, rl: rl, v: v}})
		x.held += len(v)
		out, drop = nil, true
	} else {
		out, drop = x.transform(h.tag, vr, rl, v)
		if !drop && !s.fits(h.vr, len(out)) {
			out = nil
		}
		if !drop {
			if err := x.emitElement(s, h.tag, h.vr, out); err != nil {
				return err
			}
		}
	}
	if reported {
		x.reportUID(h.tag, trimValue(v))
	}
	if top && h.tag == tagPatientID {
		return x.resolve(ctxKnown)
	}
	if x.held > maxHeld {
		return x.resolve(ctxGaveUp)
	}
	return nil
}

// capture records the patient's ID and name, for date shifts, cleaning
// and the report.
func (x *run) capture(tag uint32, v []byte) {
	s := trimValue(v)
	switch tag {
	case tagPatientID:
		if s == "" || (x.query && hasWildcard(s)) {
			return
		}
		x.patientID, x.hasID = s, true
		if len(s) >= 2 {
			x.terms = append(x.terms, s)
		}
		if x.m.keyer != nil {
			x.obj.PatientPseudonym = x.m.keyer.Token(pseudonym.KindPatientID, s)
		}
	case tagPatientName:
		if !x.query || !hasWildcard(s) {
			x.terms = append(x.terms, nameTerms(s)...)
		}
	}
}

// transform applies a rule that needs the value. drop removes the element.
func (x *run) transform(tag uint32, vr string, rl rule, v []byte) (out []byte, drop bool) {
	switch rl.act {
	case actKeep:
		return v, false
	case actRemove:
		return nil, true
	case actEmpty:
		return nil, false
	case actReplace:
		return pad(vr, dummy(vr, rl.value)), false
	case actPseudonym:
		if x.query && hasWildcard(trimValue(v)) {
			return nil, false
		}
		if vr == "UI" {
			return x.uids(v), false
		}
		kind := rl.value
		if kind == "" {
			kind = pseudonymKind(tag, vr)
		}
		b, _ := mapValues(v, func(s string) (string, bool) {
			if s == "" {
				return "", true
			}
			tok := x.m.keyer.Token(kind, s)
			if x.m.index != nil && kind == pseudonym.KindPatientID {
				x.m.index.put(tok, s)
			}
			return tok, true
		})
		return pad(vr, b), false
	case actUID:
		return x.uids(v), false
	case actRestore:
		b, _ := mapValues(v, func(s string) (string, bool) {
			if o, ok := x.m.index.get(s); ok {
				return o, true
			}
			return s, true
		})
		return pad(vr, b), false
	case actGeneralize:
		b, ok := mapValues(v, func(s string) (string, bool) { return generalize(vr, rl.value, s) })
		if !ok {
			return nil, false
		}
		return pad(vr, b), false
	}
	return x.contextual(tag, vr, rl, v)
}

func (x *run) uids(v []byte) []byte {
	b, _ := mapValues(v, func(s string) (string, bool) {
		if s == "" {
			return "", true
		}
		u := x.m.keyer.UID(s)
		if x.m.index != nil {
			x.m.index.put(u, s)
		}
		return u, true
	})
	return pad("UI", b)
}

// contextual applies the rules that depend on the patient: date shifts
// (keyed by the patient's ID) and cleaning (of the patient's name and ID).
func (x *run) contextual(tag uint32, vr string, rl rule, v []byte) (out []byte, drop bool) {
	switch rl.act {
	case actDateShift:
		if x.ctx != ctxKnown || !x.hasID {
			return nil, false
		}
		var b []byte
		ok := true
		switch vr {
		case "DA":
			b, ok = mapValues(v, func(s string) (string, bool) { return shiftDate(x.m.keyer, x.patientID, s) })
		case "DT":
			b, ok = mapValues(v, func(s string) (string, bool) { return shiftDateTime(x.m.keyer, x.patientID, s, x.query) })
		case "TM":
			return v, false
		default:
			ok = false
		}
		if !ok {
			return nil, false
		}
		return pad(vr, b), false
	case actClean:
		if !textVR(vr) {
			return v, false
		}
		if x.ctx != ctxKnown {
			return nil, true
		}
		return scrub(v, x.terms), false
	}
	return x.transform(tag, vr, rl, v)
}

func (x *run) sequence(s syntax, h header, inner syntax, rl rule, depth int) error {
	if depth >= maxNestingDepth {
		return errorf(ReasonMalformedDataSet, "sequences nested deeper than %d", maxNestingDepth)
	}
	switch rl.act {
	case actRemove:
		return x.skipSequence(inner, h, depth)
	case actEmpty:
		if err := x.skipSequence(inner, h, depth); err != nil {
			return err
		}
		return x.emitHeader(s, h.tag, h.vr, 0)
	case actReplace:
		// A dummy sequence: one empty item.
		if err := x.skipSequence(inner, h, depth); err != nil {
			return err
		}
		if err := x.emitHeader(s, h.tag, h.vr, undefinedLength); err != nil {
			return err
		}
		if err := x.emitHeader(inner, tagItem, "", undefinedLength); err != nil {
			return err
		}
		if err := x.emitHeader(inner, tagItemDelim, "", 0); err != nil {
			return err
		}
		return x.emitHeader(inner, tagSeqDelim, "", 0)
	}
	if err := x.emitHeader(s, h.tag, h.vr, undefinedLength); err != nil {
		return err
	}
	x.stack = append(x.stack, h.tag)
	defer func() { x.stack = x.stack[:len(x.stack)-1] }()
	err := x.items(inner, h, depth, func(ih header) error {
		if err := x.emitHeader(inner, tagItem, "", undefinedLength); err != nil {
			return err
		}
		end := int64(-1)
		if ih.length != undefinedLength {
			end = x.d.pos + int64(ih.length)
		}
		if err := x.dataset(inner, end, depth+1, false); err != nil {
			return err
		}
		return x.emitHeader(inner, tagItemDelim, "", 0)
	})
	if err != nil {
		return err
	}
	return x.emitHeader(inner, tagSeqDelim, "", 0)
}

// items calls f at each item header of the sequence of header h, whose
// items are encoded in s; f consumes the item's content.
func (x *run) items(s syntax, h header, depth int, f func(header) error) error {
	end := int64(-1)
	if h.length != undefinedLength {
		end = x.d.pos + int64(h.length)
	}
	for {
		if end >= 0 {
			if x.d.pos == end {
				return nil
			}
			if x.d.pos > end {
				return errorf(ReasonMalformedDataSet, "item overruns sequence %s", tagString(h.tag))
			}
		}
		ih, err := x.d.header(s)
		if err == io.EOF {
			return errorf(ReasonTruncated, "data set ended inside sequence %s", tagString(h.tag))
		}
		if err != nil {
			return err
		}
		switch {
		case ih.tag == tagSeqDelim && end < 0:
			if ih.length != 0 {
				return errorf(ReasonMalformedDataSet, "sequence delimiter of %s with length %d", tagString(h.tag), ih.length)
			}
			return nil
		case ih.tag != tagItem:
			return errorf(ReasonMalformedDataSet, "element %s where an item of %s belongs", tagString(ih.tag), tagString(h.tag))
		}
		if err := f(ih); err != nil {
			return err
		}
	}
}

func (x *run) skipSequence(s syntax, h header, depth int) error {
	if depth >= maxNestingDepth {
		return errorf(ReasonMalformedDataSet, "sequences nested deeper than %d", maxNestingDepth)
	}
	return x.items(s, h, depth, func(ih header) error {
		end := int64(-1)
		if ih.length != undefinedLength {
			end = x.d.pos + int64(ih.length)
		}
		return x.skipDataset(s, end, depth+1)
	})
}

func (x *run) skipDataset(s syntax, end int64, depth int) error {
	for {
		if end >= 0 {
			if x.d.pos == end {
				return nil
			}
			if x.d.pos > end {
				return errorf(ReasonMalformedDataSet, "element overruns its item at offset %d", x.d.pos)
			}
		}
		h, err := x.d.header(s)
		if err == io.EOF {
			return errorf(ReasonTruncated, "data set ended inside an item at offset %d", x.d.pos)
		}
		if err != nil {
			return err
		}
		switch h.tag {
		case tagItemDelim:
			if end >= 0 || h.length != 0 {
				return errorf(ReasonMalformedDataSet, "stray item delimiter at offset %d", x.d.pos)
			}
			return nil
		case tagItem, tagSeqDelim:
			return errorf(ReasonMalformedDataSet, "stray item or sequence delimiter at offset %d", x.d.pos)
		}
		k, inner, err := classify(s, h)
		if err != nil {
			return err
		}
		if err := x.skip(s, h, k, inner, depth); err != nil {
			return err
		}
	}
}

// fragments calls f at each item of encapsulated pixel data; f consumes
// the item's value.
func (x *run) fragments(s syntax, f func(header) error) error {
	for {
		ih, err := x.d.header(s)
		if err == io.EOF {
			return errorf(ReasonTruncated, "data set ended inside encapsulated pixel data")
		}
		if err != nil {
			return err
		}
		switch {
		case ih.tag == tagSeqDelim:
			if ih.length != 0 {
				return errorf(ReasonMalformedDataSet, "pixel data delimiter with length %d", ih.length)
			}
			return nil
		case ih.tag != tagItem || ih.length == undefinedLength:
			return errorf(ReasonMalformedDataSet, "element %s inside encapsulated pixel data", tagString(ih.tag))
		}
		if err := f(ih); err != nil {
			return err
		}
	}
}

func (x *run) skipEncapsulated(s syntax) error {
	return x.fragments(s, func(ih header) error { return x.d.discard(ih.length) })
}

func (x *run) encapsulated(s syntax, h header, rl rule) error {
	switch rl.act {
	case actRemove:
		return x.skipEncapsulated(s)
	case actEmpty, actReplace:
		if err := x.skipEncapsulated(s); err != nil {
			return err
		}
		return x.emitHeader(s, h.tag, h.vr, 0)
	}
	if err := x.emitHeader(s, h.tag, h.vr, undefinedLength); err != nil {
		return err
	}
	err := x.fragments(s, func(ih header) error {
		if err := x.emitHeader(s, tagItem, "", ih.length); err != nil {
			return err
		}
		return x.streamValue(ih.length)
	})
	if err != nil {
		return err
	}
	return x.emitHeader(s, tagSeqDelim, "", 0)
}

// pendingInsert is an attribute the run adds to a stored object.
type pendingInsert struct {
	tag   uint32
	write func(s syntax) error
}

// planInserts lists what a stored object gets: Patient Identity Removed,
// De-identification Method and its code sequence (PS3.15 E.1.1 item 6),
// and the masker's other attributes, in tag order.
func (x *run) planInserts() {
	text := func(tag uint32, vr, v string) pendingInsert {
		return pendingInsert{tag, func(s syntax) error { return x.emitElement(s, tag, vr, pad(vr, []byte(v))) }}
	}
	x.ins = []pendingInsert{
		text(tagIdentityRem, "CS", "YES"),
		text(tagDeidMethod, "LO", x.m.deidMethod),
		{tagDeidCodeSeq, x.writeCodes},
	}
	for _, in := range x.m.inserts {
		x.ins = append(x.ins, text(in.tag, in.vr, in.v))
	}
	slices.SortFunc(x.ins, func(a, b pendingInsert) int { return cmp.Compare(a.tag, b.tag) })
	x.insTags = make(map[uint32]bool, len(x.ins))
	for _, in := range x.ins {
		x.insTags[in.tag] = true
	}
}

// insertBefore writes the planned attributes whose tags come before tag.
func (x *run) insertBefore(s syntax, tag uint32) error {
	for len(x.ins) > 0 && x.ins[0].tag < tag {
		in := x.ins[0]
		x.ins = x.ins[1:]
		if err := in.write(s); err != nil {
			return err
		}
	}
	return nil
}

// writeCodes writes De-identification Method Code Sequence.
func (x *run) writeCodes(s syntax) error {
	if err := x.emitHeader(s, tagDeidCodeSeq, "SQ", undefinedLength); err != nil {
		return err
	}
	for _, c := range x.m.deidCodes {
		if err := x.emitHeader(s, tagItem, "", undefinedLength); err != nil {
			return err
		}
		for _, e := range []struct {
			tag uint32
			vr  string
			v   string
		}{{tagCodeValue, "SH", c.Value}, {tagCodingScheme, "SH", c.Scheme}, {tagCodeMeaning, "LO", c.Meaning}} {
			if err := x.emitElement(s, e.tag, e.vr, pad(e.vr, []byte(e.v))); err != nil {
				return err
			}
		}
		if err := x.emitHeader(s, tagItemDelim, "", 0); err != nil {
			return err
		}
	}
	return x.emitHeader(s, tagSeqDelim, "", 0)
}

// reportUID puts the keyed remap of a top-level study, series or instance
// UID in the object's access event, whether or not the profile remapped it:
// events never hold the original.
func (x *run) reportUID(tag uint32, orig string) {
	r := ""
	if orig != "" && x.m.keyer != nil {
		r = x.m.keyer.UID(orig)
	}
	switch tag {
	case tagStudyUID:
		x.obj.StudyUID = r
	case tagSeriesUID:
		x.obj.SeriesUID = r
	case tagSOPInstance:
		x.obj.InstanceUID = r
	}
}
