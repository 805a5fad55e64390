package dicom

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/medgate/medgate/crypto/pseudonym"
	"github.com/medgate/medgate/proxy/mask"
)

// action is a compiled mask.Action.
type action uint8

const (
	actKeep action = iota
	actRemove
	actEmpty
	actReplace
	actPseudonym
	actDateShift
	actUID
	actGeneralize
	actClean
	actRestore
)

var actions = map[mask.Action]action{
	mask.Keep:       actKeep,
	mask.Remove:     actRemove,
	mask.Empty:      actEmpty,
	mask.Replace:    actReplace,
	mask.Pseudonym:  actPseudonym,
	mask.DateShift:  actDateShift,
	mask.UIDRemap:   actUID,
	mask.Generalize: actGeneralize,
	mask.Clean:      actClean,
}

type rule struct {
	act   action
	value string
}

// pathRule applies to an attribute inside the items of the sequences its
// path names, innermost last: "ReferencedStudySequence/StudyInstanceUID".
type pathRule struct {
	path []uint32
	rule
}

// insert is an attribute the masker adds to stored objects, in tag order.
type insert struct {
	tag uint32
	vr  string
	v   string
}

// patternRule applies to the tags t with t&mask == value: the repeating
// groups such as (50xx,xxxx) and (60xx,4000).
type patternRule struct {
	mask, value uint32
	rule
}

// Masker applies one mask.Profile to DICOM data sets. It is immutable
// and safe for concurrent use; build it once per profile version and
// share it between connections.
type Masker struct {
	profile, version string
	keyer            *pseudonym.Keyer
	exact            map[uint32]rule
	paths            []pathRule
	patterns         []patternRule
	private          *rule
	// byVR applies to standard attributes no rule names (the basic
	// profile's handling of dates and person names by their VR).
	byVR map[string]rule
	// deidentify adds Patient Identity Removed and the De-identification
	// Method attributes to stored objects.
	deidentify  bool
	deidMethod  string
	deidCodes   []mask.DICOMCode
	inserts     []insert // besides the de-identification attributes
	needContext bool     // some action depends on the patient's ID or name
	// index, when set, records the pseudonyms and UIDs written.
	index *Index
	// restore marks a Restorer: it translates identifiers back in
	// requests, passes other data sets through and reports nothing.
	restore bool
}

// NewMasker compiles the DICOM part of p. With p.DICOMBasic the rules
// start from mask.DICOMBasicRules(p.DICOMOptions) and p.DICOM overrides
// them tag by tag; otherwise p.DICOM alone applies and every attribute no
// rule names is kept. Rule fields are tags "(gggg,eeee)", keywords,
// repeating-group patterns such as "(60xx,4000)", or mask.DICOMPrivateTags.
// Pseudonym, date shift and UID actions need env.Keyer.
func NewMasker(p *mask.Profile, env mask.Env) (*Masker, error) {
	if p == nil {
		return nil, errors.New("dicom: no masking profile")
	}
	m := &Masker{
		profile: p.Name,
		version: p.Version,
		keyer:   env.Keyer,
		exact:   make(map[uint32]rule),
	}
	var rules []mask.Rule
	if p.DICOMBasic {
		rules = mask.DICOMBasicRules(p.DICOMOptions)
		m.deidentify = true
		m.deidMethod = mask.DICOMDeidentificationMethod(p.DICOMOptions)
		m.deidCodes = mask.DICOMDeidentificationCodes(p.DICOMOptions)
		dates := rule{act: actEmpty}
		if p.DICOMOptions.RetainLongitudinalModifiedDates {
			dates = rule{act: actDateShift}
		}
		m.byVR = map[string]rule{"DA": dates, "DT": dates, "PN": {act: actEmpty}}
		if p.DICOMOptions.RetainLongitudinalModifiedDates {
			m.inserts = append(m.inserts, insert{tag: tagLongitudinalModified, vr: "CS", v: "MODIFIED"})
		}
	}
	rules = append(rules, p.DICOM...)
	var errs []error
	for i, r := range rules {
		a, ok := actions[r.Action]
		if !ok {
			errs = append(errs, fmt.Errorf("dicom: rule %d (%s): unknown action %q", i, r.Field, r.Action))
			continue
		}
		if (a == actPseudonym || a == actDateShift || a == actUID) && env.Keyer == nil {
			errs = append(errs, fmt.Errorf("dicom: rule %d (%s): action %s needs a pseudonym key", i, r.Field, r.Action))
			continue
		}
		if a == actDateShift || a == actClean {
			m.needContext = true
		}
		rl := rule{act: a, value: r.Value}
		f := strings.TrimSpace(r.Field)
		switch {
		case f == mask.DICOMPrivateTags:
			m.private = &rl
		case strings.Contains(f, "/"):
			var path []uint32
			for part := range strings.SplitSeq(f, "/") {
				t, err := ParseTag(part)
				if err != nil {
					errs = append(errs, fmt.Errorf("dicom: rule %d: %w", i, err))
					path = nil
					break
				}
				path = append(path, t)
			}
			if path != nil {
				m.paths = append(m.paths, pathRule{path: path, rule: rl})
			}
		case strings.ContainsAny(f, "xX") && !isKeyword(f):
			pr, err := parsePattern(f)
			if err != nil {
				errs = append(errs, fmt.Errorf("dicom: rule %d: %w", i, err))
				continue
			}
			pr.rule = rl
			m.patterns = append(m.patterns, pr)
		default:
			t, err := ParseTag(f)
			if err != nil {
				errs = append(errs, fmt.Errorf("dicom: rule %d: %w", i, err))
				continue
			}
			m.exact[t] = rl
		}
	}
	if m.byVR["DA"].act == actDateShift {
		if env.Keyer == nil {
			errs = append(errs, errors.New("dicom: the longitudinal dates option needs a pseudonym key"))
		}
		m.needContext = true
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return m, nil
}

func isKeyword(s string) bool {
	_, ok := dict().byKeyword[s]
	return ok
}

// parsePattern reads "(ggxx,eeee)"-style patterns: each x is a wildcard
// hex digit.
func parsePattern(f string) (patternRule, error) {
	h := strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(f, "("), ")"), ",", "")
	if len(h) != 8 {
		return patternRule{}, fmt.Errorf("dicom: %q is not a tag pattern", f)
	}
	var pr patternRule
	for i := range 8 {
		shift := uint(28 - 4*i)
		c := h[i]
		if c == 'x' || c == 'X' {
			continue
		}
		d, err := strconv.ParseUint(string(c), 16, 8)
		if err != nil {
			return patternRule{}, fmt.Errorf("dicom: %q is not a tag pattern", f)
		}
		pr.mask |= 0xF << shift
		pr.value |= uint32(d) << shift
	}
	return pr, nil
}

// ruleFor returns the rule for tag t whose VR (explicit, or from the
// dictionary) is vr, inside the items of the sequences in stack
// (outermost first). The rule with the longest matching path wins, then
// a rule for the tag, then one for private attributes, then a
// repeating-group pattern, then the rule for the VR.
func (m *Masker) ruleFor(t uint32, vr string, stack []uint32) rule {
	best, bestLen := rule{}, 0
	for _, p := range m.paths {
		n := len(p.path)
		if n <= bestLen || n-1 > len(stack) || p.path[n-1] != t {
			continue
		}
		match := true
		for i := range n - 1 {
			if p.path[i] != stack[len(stack)-(n-1)+i] {
				match = false
				break
			}
		}
		if match {
			best, bestLen = p.rule, n
		}
	}
	if bestLen > 0 {
		return best
	}
	if r, ok := m.exact[t]; ok {
		return r
	}
	if (t>>16)%2 == 1 {
		if m.private != nil {
			return *m.private
		}
		return rule{act: actKeep}
	}
	for _, p := range m.patterns {
		if t&p.mask == p.value {
			return p.rule
		}
	}
	if r, ok := m.byVR[vr]; ok {
		return r
	}
	return rule{act: actKeep}
}

// remapsInstances reports whether SOP Instance UIDs are remapped, so the
// UIDs in command sets are remapped the same way.
func (m *Masker) remapsInstances() bool {
	return m.exact[tagSOPInstance].act == actUID
}

func (m *Masker) object(op string) mask.Object {
	return mask.Object{Protocol: "dicom", Operation: op, Profile: m.profile, ProfileVersion: m.version}
}
