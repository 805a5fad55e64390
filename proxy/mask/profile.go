package mask

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/medgate/medgate/crypto/pseudonym"
)

// HIPAASafeHarbor is the name of the built-in HIPAA safe harbor profile.
const HIPAASafeHarbor = "hipaa-safe-harbor"

// builtins holds the built-in profiles by name. It is filled by init
// functions through registerBuiltin and only read afterwards.
var builtins = struct {
	sync.RWMutex
	m map[string]*Profile
}{m: map[string]*Profile{}}

// registerBuiltin adds p to the built-in profiles. It is meant to be called
// from init functions of this package (hipaa.go, dicom_basic.go). It sets
// p.Version to the profile's content hash when it is empty, and panics on
// an empty or duplicate name: both are programming errors.
func registerBuiltin(p *Profile) {
	if p == nil || p.Name == "" {
		panic("mask: built-in profile without a name")
	}
	q := p.clone()
	if q.Version == "" {
		q.Version = contentVersion(q)
	}
	builtins.Lock()
	defer builtins.Unlock()
	if _, dup := builtins.m[q.Name]; dup {
		panic("mask: built-in profile " + q.Name + " registered twice")
	}
	builtins.m[q.Name] = q
}

// Builtin returns a copy of the built-in profile called name
// ("hipaa-safe-harbor", "dicom-basic"), and whether there is one. The copy
// is the caller's; changing it does not change the registry.
func Builtin(name string) (*Profile, bool) {
	builtins.RLock()
	p, ok := builtins.m[name]
	builtins.RUnlock()
	if !ok {
		return nil, false
	}
	return p.clone(), true
}

// BuiltinNames returns the names of the built-in profiles, sorted.
func BuiltinNames() []string {
	builtins.RLock()
	defer builtins.RUnlock()
	names := make([]string, 0, len(builtins.m))
	for n := range builtins.m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (p *Profile) clone() *Profile {
	q := *p
	q.DICOM = slices.Clone(p.DICOM)
	q.HL7 = slices.Clone(p.HL7)
	q.FHIR = slices.Clone(p.FHIR)
	return &q
}

// contentVersion is a digest of everything in p but its name and version:
// two profiles with the same rules have the same version, whatever their
// name or history.
func contentVersion(p *Profile) string {
	q := *p
	q.Name, q.Version = "", ""
	b, err := json.Marshal(&q)
	if err != nil {
		panic(fmt.Sprintf("mask: encode profile: %v", err))
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:12])
}

// Spec is the JSON shape of a custom masking profile, as a policy's
// MaskingProfile keeps it:
//
//	{
//	  "base": "hipaa-safe-harbor",
//	  "dicom": [{"field": "PatientName", "action": "pseudonym", "value": "name"}],
//	  "hl7":   [{"field": "PID-11.5", "action": "generalize", "value": "zip"}],
//	  "fhir":  [{"field": "Patient.address.postalCode", "action": "generalize", "value": "zip"}],
//	  "dicomOptions": {"retainPatientCharacteristics": true}
//	}
//
// Base names a built-in profile whose rules come first; the spec's rules
// follow them, and where two rules select the same field equally
// specifically the later one wins, so a spec refines its base. An empty
// base starts from nothing. DICOMOptions, when present, replace the base's.
//
// Rule.Value means, by action: for replace, the replacement (empty: a
// dummy); for pseudonym, the kind of identifier ("patient-id", "name",
// "accession", "other"; empty: "other"), so that the same patient ID gives
// the same token in DICOM, HL7 and FHIR; for generalize, what the value is
// ("year", "birthyear" (a year, and 90 years back at most, as safe harbor
// groups ages over 89), "zip", "age"; empty: guessed from the value's
// form); unused for the other actions.
type Spec struct {
	Base         string        `json:"base,omitempty"`
	DICOM        []Rule        `json:"dicom,omitempty"`
	HL7          []Rule        `json:"hl7,omitempty"`
	FHIR         []Rule        `json:"fhir,omitempty"`
	DICOMOptions *DICOMOptions `json:"dicomOptions,omitempty"`
}

// Kinds a generalize rule may name in its Value.
const (
	GeneralizeYear      = "year"
	GeneralizeBirthYear = "birthyear"
	GeneralizeZIP       = "zip"
	GeneralizeAge       = "age"
)

var pseudonymKinds = []string{pseudonym.KindPatientID, pseudonym.KindName, pseudonym.KindAccession, pseudonym.KindOther}

var generalizeKinds = []string{GeneralizeYear, GeneralizeBirthYear, GeneralizeZIP, GeneralizeAge}

// ErrProfile is wrapped by every error ParseProfile returns.
var ErrProfile = errors.New("mask: invalid profile")

// ParseProfile builds the custom profile called name from spec (see Spec).
// Unknown JSON fields, unknown actions, unknown bases and fields that do
// not parse as their protocol's paths are refused, each problem reported
// with the list ("hl7[3]") and field at fault; all problems come at once.
// The profile's Version is a digest of its content.
func ParseProfile(name string, spec []byte) (*Profile, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: name is empty", ErrProfile)
	}
	var s Spec
	dec := json.NewDecoder(bytes.NewReader(spec))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w %s: spec: %v", ErrProfile, name, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w %s: spec: data after the JSON object", ErrProfile, name)
	}
	p := &Profile{Name: name}
	var errs []error
	if s.Base != "" {
		b, ok := Builtin(s.Base)
		if !ok {
			errs = append(errs, fmt.Errorf("base: no built-in profile %q (have %s)", s.Base, strings.Join(BuiltinNames(), ", ")))
		} else {
			p = b
			p.Name = name
		}
	}
	errs = append(errs, validateRules("dicom", s.DICOM, validDICOMField, dicomClean)...)
	errs = append(errs, validateRules("hl7", s.HL7, func(f string) error { _, err := ParseHL7Path(f); return err })...)
	errs = append(errs, validateRules("fhir", s.FHIR, func(f string) error { _, err := ParseFHIRPath(f); return err })...)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w %s: %w", ErrProfile, name, errors.Join(errs...))
	}
	p.DICOM = append(p.DICOM, s.DICOM...)
	p.HL7 = append(p.HL7, s.HL7...)
	p.FHIR = append(p.FHIR, s.FHIR...)
	if s.DICOMOptions != nil {
		p.DICOMOptions = *s.DICOMOptions
	}
	p.Version = contentVersion(p)
	return p, nil
}

// dicomClean is PS3.15's action C, which only the DICOM codec carries out.
const dicomClean Action = "clean"

func validateRules(list string, rules []Rule, field func(string) error, extra ...Action) []error {
	var errs []error
	for i, r := range rules {
		at := fmt.Sprintf("%s[%d]", list, i)
		if err := field(r.Field); err != nil {
			errs = append(errs, fmt.Errorf("%s: field: %w", at, err))
		}
		if slices.Contains(extra, r.Action) {
			continue
		}
		if err := validateAction(r); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
		}
	}
	return errs
}

func validateAction(r Rule) error {
	switch r.Action {
	case "":
		return errors.New("action: missing")
	case Pseudonym:
		if r.Value != "" && !slices.Contains(pseudonymKinds, r.Value) {
			return fmt.Errorf("value: pseudonym kind %q is not one of %s", r.Value, strings.Join(pseudonymKinds, ", "))
		}
	case Generalize:
		if r.Value != "" && !slices.Contains(generalizeKinds, r.Value) {
			return fmt.Errorf("value: generalize kind %q is not one of %s", r.Value, strings.Join(generalizeKinds, ", "))
		}
	case Replace:
	default:
		if !slices.Contains(Actions, r.Action) {
			names := make([]string, len(Actions))
			for i, a := range Actions {
				names[i] = string(a)
			}
			return fmt.Errorf("action: %q is not one of %s", r.Action, strings.Join(names, ", "))
		}
		if r.Value != "" {
			return fmt.Errorf("value: action %s takes no value", r.Action)
		}
	}
	return nil
}

// validDICOMField accepts a tag "(gggg,eeee)" or "ggggeeee" (x for the
// digits of a repeating group: "(60xx,3000)"), a keyword, "private" for
// every private attribute, or a sequence path of tags and keywords joined
// by "/"; the DICOM codec checks keywords against its dictionary when it
// applies the profile.
func validDICOMField(f string) error {
	if f == "" {
		return errors.New("empty")
	}
	if f == "private" {
		return nil
	}
	for part := range strings.SplitSeq(f, "/") {
		if !dicomTagOrKeyword(part) {
			return fmt.Errorf("%q is not a DICOM tag (gggg,eeee) or keyword", part)
		}
	}
	return nil
}

func dicomTagOrKeyword(s string) bool {
	if len(s) == 11 && s[0] == '(' && s[5] == ',' && s[10] == ')' {
		return isHex(s[1:5]) && isHex(s[6:10])
	}
	if len(s) == 8 && isHex(s) {
		return true
	}
	if s == "" || !isLetter(s[0]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLetter(s[i]) && !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isDigit(c) && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') && c != 'x' && c != 'X' {
			return false
		}
	}
	return s != ""
}

func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isUpperAlnum(c byte) bool {
	return c >= 'A' && c <= 'Z' || isDigit(c)
}

// Any marks a wildcard position in a path: any field, repetition,
// component or element.
const Any = -1

// HL7Path selects parts of HL7 v2 segments:
//
//	PID          the whole segment (remove drops it; other actions apply to every field)
//	Z*           every segment whose name starts with Z (a prefix of one or two characters)
//	PID-5        field 5, every repetition
//	PID-*        every field
//	PID-3[1]     the first repetition of field 3
//	PID-3[*].1   component 1 of every repetition
//	PID-5.1.2    subcomponent 2 of component 1
//
// Numbers are 1-based, as in the standard. MSH-1 and MSH-2 (the
// delimiters) cannot be selected.
type HL7Path struct {
	Segment string // three characters, or a prefix when Prefix is set
	Prefix  bool   // Segment is a prefix ("Z" for "Z*")
	// Field, Rep, Component and Sub are 1-based positions, Any, or 0 when
	// the path stops before that level. Rep is Any unless a repetition is
	// named.
	Field, Rep, Component, Sub int
}

// Depth is how deep the path reaches: 0 for a segment, 1 for a field,
// 2 for a component, 3 for a subcomponent.
func (p HL7Path) Depth() int {
	switch {
	case p.Sub != 0:
		return 3
	case p.Component != 0:
		return 2
	case p.Field != 0:
		return 1
	}
	return 0
}

// MatchSegment reports whether the path selects segments called name.
func (p HL7Path) MatchSegment(name string) bool {
	if p.Prefix {
		return strings.HasPrefix(name, p.Segment)
	}
	return p.Segment == name
}

// ParseHL7Path parses an HL7 v2 path (see HL7Path).
func ParseHL7Path(s string) (HL7Path, error) {
	var p HL7Path
	seg, rest, hasField := strings.Cut(s, "-")
	switch {
	case len(seg) >= 2 && len(seg) <= 3 && seg[len(seg)-1] == '*':
		p.Segment, p.Prefix = seg[:len(seg)-1], true
		if !isUpperAlnum(p.Segment[0]) || len(p.Segment) == 2 && !isUpperAlnum(p.Segment[1]) {
			return p, fmt.Errorf("%q: segment prefix must be upper-case letters or digits", s)
		}
	case len(seg) == 3 && isUpperAlnum(seg[0]) && isUpperAlnum(seg[1]) && isUpperAlnum(seg[2]):
		p.Segment = seg
	default:
		return p, fmt.Errorf("%q: segment must be three upper-case letters or digits, or a prefix and *", s)
	}
	p.Rep = Any
	if !hasField {
		return p, nil
	}
	parts := strings.Split(rest, ".")
	if len(parts) > 3 {
		return p, fmt.Errorf("%q: deeper than a subcomponent", s)
	}
	f := parts[0]
	if i := strings.IndexByte(f, '['); i >= 0 {
		if !strings.HasSuffix(f, "]") {
			return p, fmt.Errorf("%q: repetition is not closed with ]", s)
		}
		r, err := position(f[i+1 : len(f)-1])
		if err != nil {
			return p, fmt.Errorf("%q: repetition: %w", s, err)
		}
		p.Rep, f = r, f[:i]
	}
	var err error
	if p.Field, err = position(f); err != nil {
		return p, fmt.Errorf("%q: field: %w", s, err)
	}
	if len(parts) > 1 {
		if p.Component, err = position(parts[1]); err != nil {
			return p, fmt.Errorf("%q: component: %w", s, err)
		}
	}
	if len(parts) > 2 {
		if p.Sub, err = position(parts[2]); err != nil {
			return p, fmt.Errorf("%q: subcomponent: %w", s, err)
		}
	}
	if p.Segment == "MSH" && !p.Prefix && (p.Field == 1 || p.Field == 2) {
		return p, fmt.Errorf("%q: MSH-1 and MSH-2 are the delimiters and cannot be masked", s)
	}
	return p, nil
}

func position(s string) (int, error) {
	if s == "*" {
		return Any, nil
	}
	if s == "" || len(s) > 4 || s[0] == '0' {
		return 0, fmt.Errorf("%q is not * or a number from 1 to 9999", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%q is not * or a number from 1 to 9999", s)
	}
	return n, nil
}

// FHIRPath selects elements of FHIR JSON resources: a resource type (or
// "*" for any) followed by element names (or "*" for any element),
// separated by dots: "Patient.name", "Patient.address.postalCode",
// "*.text", "Patient.*". Arrays are transparent: "Patient.name.family"
// selects the family of every name. Choice elements are named in full
// ("Observation.effectiveDateTime").
type FHIRPath struct {
	Resource string   // a resource type, or "*"
	Elements []string // element names, or "*"
}

// ParseFHIRPath parses a FHIR path (see FHIRPath).
func ParseFHIRPath(s string) (FHIRPath, error) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return FHIRPath{}, fmt.Errorf("%q: want a resource type and at least one element, like Patient.name", s)
	}
	r := parts[0]
	if r != "*" && !fhirName(r, true) {
		return FHIRPath{}, fmt.Errorf("%q: %q is not a resource type or *", s, r)
	}
	for _, e := range parts[1:] {
		if e != "*" && !fhirName(e, false) {
			return FHIRPath{}, fmt.Errorf("%q: %q is not an element name or *", s, e)
		}
	}
	if parts[1] == "resourceType" {
		return FHIRPath{}, fmt.Errorf("%q: resourceType cannot be masked", s)
	}
	return FHIRPath{Resource: r, Elements: parts[1:]}, nil
}

func fhirName(s string, upper bool) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	if upper != (s[0] >= 'A' && s[0] <= 'Z') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLetter(s[i]) && !isDigit(s[i]) && s[i] != '_' {
			return false
		}
	}
	return true
}
