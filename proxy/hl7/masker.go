package hl7

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/medgate/medgate/crypto/pseudonym"
	"github.com/medgate/medgate/proxy/mask"
)

// defaultReplacement is what replace writes when its rule has no value.
const defaultReplacement = "REDACTED"

type rule struct {
	path   mask.HL7Path
	action mask.Action
	value  string
	order  int
}

// better reports whether r should decide over o (nil o loses): a rule
// naming its field beats a wildcard, then a deeper rule beats a shallower
// one, then a named repetition beats every repetition, then the later rule
// beats the earlier.
func (r *rule) better(o *rule) bool {
	if o == nil {
		return true
	}
	if a, b := r.path.Field != mask.Any, o.path.Field != mask.Any; a != b {
		return a
	}
	if a, b := r.path.Depth(), o.path.Depth(); a != b {
		return a > b
	}
	if a, b := r.path.Rep != mask.Any, o.path.Rep != mask.Any; a != b {
		return a
	}
	return r.order > o.order
}

// masker applies the HL7 rules of one profile. It is safe for concurrent
// use.
type masker struct {
	rules []rule
	keyer *pseudonym.Keyer
	cache sync.Map // segment name -> *segmentRules
	n     int
	mu    sync.Mutex
}

type segmentRules struct {
	remove bool
	fields []*rule // rules at field depth or deeper, in order
}

var errNeedsKeyer = errors.New("hl7: the profile pseudonymizes, shifts dates or remaps UIDs, and the environment has no keyer")

func newMasker(p *mask.Profile, keyer *pseudonym.Keyer) (*masker, error) {
	m := &masker{keyer: keyer}
	for i, r := range p.HL7 {
		path, err := mask.ParseHL7Path(r.Field)
		if err != nil {
			return nil, fmt.Errorf("hl7: profile %s: hl7[%d]: %w", p.Name, i, err)
		}
		switch r.Action {
		case mask.Pseudonym, mask.DateShift, mask.UIDRemap:
			if keyer == nil {
				return nil, errNeedsKeyer
			}
		case mask.Remove, mask.Empty, mask.Replace, mask.Generalize, mask.Keep:
		default:
			return nil, fmt.Errorf("hl7: profile %s: hl7[%d]: unknown action %q", p.Name, i, r.Action)
		}
		m.rules = append(m.rules, rule{path: path, action: r.Action, value: r.Value, order: i})
	}
	return m, nil
}

func (m *masker) forSegment(name string) *segmentRules {
	if v, ok := m.cache.Load(name); ok {
		return v.(*segmentRules)
	}
	sr := &segmentRules{}
	var segRule *rule
	for i := range m.rules {
		r := &m.rules[i]
		if !r.path.MatchSegment(name) {
			continue
		}
		if r.path.Depth() == 0 {
			if segRule == nil || r.order > segRule.order {
				segRule = r
			}
			continue
		}
		sr.fields = append(sr.fields, r)
	}
	if segRule != nil {
		if segRule.action == mask.Remove {
			sr.remove = name != "MSH"
		} else {
			wide := *segRule
			wide.path.Field = mask.Any
			sr.fields = append([]*rule{&wide}, sr.fields...)
		}
	}
	m.mu.Lock()
	if m.n < 4096 {
		m.cache.Store(name, sr)
		m.n++
	}
	m.mu.Unlock()
	return sr
}

// msgContext is what masking one message needs besides the rules.
type msgContext struct {
	d          Delimiters
	patientKey string // PID-3's first ID, decoded; "" when there is none
	refYear    int
}

// mask applies the rules to msg in place.
func (m *masker) mask(msg *Message, ctx *msgContext) {
	keys := patientKeys(msg)
	out := msg.Segments[:0]
	for i := range msg.Segments {
		seg := msg.Segments[i]
		ctx.patientKey = keys[i]
		if seg.Name == "" {
			out = append(out, seg)
			continue
		}
		sr := m.forSegment(seg.Name)
		if sr.remove {
			continue
		}
		if len(sr.fields) > 0 {
			first := 1
			if seg.Name == "MSH" {
				first = 3
			}
			for f := first; f < len(seg.Fields); f++ {
				var cands []*rule
				for _, r := range sr.fields {
					if r.path.Field == mask.Any || r.path.Field == f {
						cands = append(cands, r)
					}
				}
				if len(cands) > 0 {
					seg.Fields[f] = m.field(seg.Fields[f], cands, ctx)
				}
			}
		}
		out = append(out, seg)
	}
	msg.Segments = out
}

// patientKeys returns, for each segment, the ID of the patient it belongs
// to: that of the PID before it, or of the first PID for segments before
// any.
func patientKeys(msg *Message) []string {
	keys := make([]string, len(msg.Segments))
	cur, first := "", -1
	for i := range msg.Segments {
		if msg.Segments[i].Name == "PID" {
			cur = patientID(&msg.Segments[i], msg.Delims)
			if first < 0 {
				first = i
				for j := range i {
					keys[j] = cur
				}
			}
		}
		keys[i] = cur
	}
	return keys
}

// patientID returns the decoded ID of PID-3's first repetition.
func patientID(pid *Segment, d Delimiters) string {
	f := pid.Field(3)
	if d.Repetition != 0 {
		f, _, _ = strings.Cut(f, string(d.Repetition))
	}
	f, _, _ = strings.Cut(f, string(d.Component))
	if d.Subcomponent != 0 {
		f, _, _ = strings.Cut(f, string(d.Subcomponent))
	}
	return strings.TrimSpace(d.DecodeValue(f))
}

func (m *masker) field(raw string, cands []*rule, ctx *msgContext) string {
	if raw == "" {
		return raw
	}
	d := ctx.d
	reps := []string{raw}
	if d.Repetition != 0 {
		reps = strings.Split(raw, string(d.Repetition))
	}
	for i, rep := range reps {
		var rc []*rule
		for _, r := range cands {
			if r.path.Rep == mask.Any || r.path.Rep == i+1 {
				rc = append(rc, r)
			}
		}
		reps[i] = m.node(rep, 1, rc, nil, ctx)
	}
	return joinParts(reps, d.Repetition)
}

// node masks a repetition (level 1), component (2) or subcomponent (3)
// with the rules that select it: the best of those at its level and the
// one it inherits decides it, unless rules reach deeper, when its parts
// are masked one by one.
func (m *masker) node(v string, level int, rules []*rule, inherited *rule, ctx *msgContext) string {
	best := inherited
	var deeper []*rule
	for _, r := range rules {
		switch dep := r.path.Depth(); {
		case dep == level:
			if r.better(best) {
				best = r
			}
		case dep > level:
			deeper = append(deeper, r)
		}
	}
	if len(deeper) == 0 || v == "" {
		return m.apply(best, v, level, ctx)
	}
	sep := ctx.d.Component
	if level == 2 {
		sep = ctx.d.Subcomponent
	}
	if sep == 0 {
		return m.node(v, level+1, deeper, best, ctx)
	}
	parts := strings.Split(v, string(sep))
	for i, part := range parts {
		var pr []*rule
		for _, r := range deeper {
			pos := r.path.Component
			if level == 2 {
				pos = r.path.Sub
			}
			if pos == mask.Any || pos == i+1 {
				pr = append(pr, r)
			}
		}
		parts[i] = m.node(part, level+1, pr, best, ctx)
	}
	return joinParts(parts, sep)
}

// apply carries out r on the raw value v at level.
func (m *masker) apply(r *rule, v string, level int, ctx *msgContext) string {
	if r == nil || v == "" {
		return v
	}
	d := ctx.d
	switch r.action {
	case mask.Keep:
		return v
	case mask.Remove, mask.Empty:
		return ""
	case mask.Replace:
		if r.value == "" {
			return defaultReplacement
		}
		return d.EncodeValue(r.value)
	case mask.Pseudonym:
		kind := r.value
		if kind == "" {
			kind = pseudonym.KindOther
		}
		norm := normalize(v, level, d)
		if kind == pseudonym.KindName {
			norm = personName(norm)
		}
		if norm == "" {
			return ""
		}
		return m.keyer.Token(kind, norm)
	}
	return m.leaves(v, level, d, func(leaf string) string {
		switch r.action {
		case mask.DateShift:
			if ctx.patientKey == "" {
				y, _ := mask.GeneralizeValue(mask.GeneralizeYear, leaf, 0)
				return y
			}
			s, err := m.keyer.ShiftDate(ctx.patientKey, leaf)
			if err != nil {
				y, _ := mask.GeneralizeValue(mask.GeneralizeYear, leaf, 0)
				return y
			}
			return s
		case mask.UIDRemap:
			return m.keyer.UID(leaf)
		case mask.Generalize:
			g, ok := mask.GeneralizeValue(r.value, leaf, ctx.refYear)
			if !ok {
				return ""
			}
			return g
		}
		return ""
	})
}

// leaves applies fn to every non-empty decoded leaf of v (its
// subcomponents), escaping what fn returns.
func (m *masker) leaves(v string, level int, d Delimiters, fn func(string) string) string {
	split := func(s string, sep byte, f func(string) string) string {
		if sep == 0 || strings.IndexByte(s, sep) < 0 {
			return f(s)
		}
		parts := strings.Split(s, string(sep))
		for i, p := range parts {
			parts[i] = f(p)
		}
		return strings.Join(parts, string(sep))
	}
	leaf := func(s string) string {
		s = strings.TrimSpace(d.DecodeValue(s))
		if s == "" {
			return ""
		}
		return d.EncodeValue(fn(s))
	}
	sub := func(s string) string { return split(s, d.Subcomponent, leaf) }
	switch level {
	case 1:
		return split(v, d.Component, sub)
	case 2:
		return sub(v)
	}
	return leaf(v)
}

// normalize gives the pseudonym input of a value: decoded, components
// joined by ^ and subcomponents by &, trailing empty parts and spaces
// trimmed, so that a name reads as a DICOM person name does.
func normalize(v string, level int, d Delimiters) string {
	join := func(parts []string, sep string) string {
		for len(parts) > 0 && parts[len(parts)-1] == "" {
			parts = parts[:len(parts)-1]
		}
		return strings.Join(parts, sep)
	}
	sub := func(s string) string {
		if d.Subcomponent == 0 {
			return strings.TrimSpace(d.DecodeValue(s))
		}
		ps := strings.Split(s, string(d.Subcomponent))
		for i, p := range ps {
			ps[i] = strings.TrimSpace(d.DecodeValue(p))
		}
		return join(ps, "&")
	}
	switch level {
	case 1:
		cs := strings.Split(v, string(d.Component))
		for i, c := range cs {
			cs[i] = sub(c)
		}
		return join(cs, "^")
	case 2:
		return sub(v)
	}
	return strings.TrimSpace(d.DecodeValue(v))
}

// personName reduces a normalized name to the family, given and middle
// names, upper-case: the parts an HL7 XPN and a DICOM PN share, in the
// same order, so that one person's name gives one pseudonym in both.
func personName(norm string) string {
	parts := strings.SplitN(norm, "^", 4)
	parts = parts[:min(len(parts), 3)]
	for len(parts) > 0 && parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
	}
	return strings.ToUpper(strings.Join(parts, "^"))
}

// joinParts joins masked parts with sep, or gives "" when every part is
// empty, so that a field whose parts were all removed is empty rather
// than a row of delimiters.
func joinParts(parts []string, sep byte) string {
	for _, p := range parts {
		if p != "" {
			return strings.Join(parts, string(sep))
		}
	}
	return ""
}
