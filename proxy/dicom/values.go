package dicom

import (
	"strings"
	"time"

	"github.com/medgate/medgate/crypto/pseudonym"
	"github.com/medgate/medgate/proxy/mask"
)

// trimValue drops the padding of a string value: trailing spaces and NULs,
// leading spaces.
func trimValue(v []byte) string {
	return strings.TrimLeft(strings.TrimRight(string(v), " \x00"), " ")
}

// pad makes a value even-length: UIDs with a NUL, text with a space.
func pad(vr string, b []byte) []byte {
	if len(b)%2 == 0 {
		return b
	}
	if vr == "UI" {
		return append(b, 0)
	}
	return append(b, ' ')
}

func textVR(vr string) bool {
	switch vr {
	case "LO", "SH", "ST", "LT", "UT", "UC":
		return true
	}
	return false
}

func hasWildcard(s string) bool { return strings.ContainsAny(s, "*?") }

// dummy is the value Replace writes when its rule names none: valid for
// the VR and free of identifying information.
func dummy(vr, value string) []byte {
	if value != "" {
		return []byte(value)
	}
	switch vr {
	case "AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT":
		return []byte("ANONYMIZED")
	case "AS":
		return []byte("000Y")
	case "DA":
		return []byte("19000101")
	case "DT":
		return []byte("19000101000000")
	case "TM":
		return []byte("000000")
	case "DS", "IS":
		return []byte("0")
	case "UI":
		return []byte("2.25.0")
	case "US", "SS":
		return make([]byte, 2)
	case "UL", "SL", "FL", "AT":
		return make([]byte, 4)
	case "FD", "SV", "UV":
		return make([]byte, 8)
	}
	return nil
}

// pseudonymKind is the pseudonym kind of an attribute: patient IDs,
// accession numbers and person names each get their own.
func pseudonymKind(t uint32, vr string) string {
	switch {
	case t == tagPatientID || t == 0x00101000:
		return pseudonym.KindPatientID
	case t == 0x00080050:
		return pseudonym.KindAccession
	case vr == "PN":
		return pseudonym.KindName
	}
	return pseudonym.KindOther
}

// mapValues applies f to each value of a multi-valued string.
func mapValues(v []byte, f func(string) (string, bool)) ([]byte, bool) {
	parts := strings.Split(strings.TrimRight(string(v), " \x00"), `\`)
	for i, p := range parts {
		q, ok := f(strings.TrimSpace(p))
		if !ok {
			return nil, false
		}
		parts[i] = q
	}
	return []byte(strings.Join(parts, `\`)), true
}

// shiftDate shifts a DA value (or a DA range "a-b", "-b", "a-" in a
// query) by the patient's keyed shift.
func shiftDate(k *pseudonym.Keyer, key, v string) (string, bool) {
	if v == "" {
		return "", true
	}
	if a, b, ok := strings.Cut(v, "-"); ok {
		sa, oka := shiftDate(k, key, a)
		sb, okb := shiftDate(k, key, b)
		return sa + "-" + sb, oka && okb
	}
	if len(v) != 8 {
		return "", false
	}
	s, err := k.ShiftDate(key, v)
	return s, err == nil
}

// shiftDateTime shifts the date part of a DT value, keeping its time and
// offset.
func shiftDateTime(k *pseudonym.Keyer, key, v string, query bool) (string, bool) {
	if v == "" {
		return "", true
	}
	if query && strings.Contains(v, "-") {
		return "", false
	}
	if len(v) < 8 {
		return "", false
	}
	s, err := k.ShiftDate(key, v)
	return s, err == nil
}

// generalize coarsens a value as mask.GeneralizeValue does for kind
// (year, birthyear, zip, age; "" guesses from the value), in the form
// the VR wants: a DA keeps its length (YYYY0101), a DT is the year, an
// age under a year (AS in days, weeks or months) is 000Y.
func generalize(vr, kind, v string) (string, bool) {
	if v == "" {
		return "", true
	}
	if vr == "AS" {
		if len(v) != 4 {
			return "", false
		}
		if u := v[3]; u == 'D' || u == 'W' || u == 'M' {
			return "000Y", true
		}
		if kind == "" {
			kind = mask.GeneralizeAge
		}
	}
	if (vr == "DA" || vr == "DT") && kind == "" {
		kind = mask.GeneralizeYear
	}
	g, ok := mask.GeneralizeValue(kind, v, time.Now().Year())
	if !ok {
		return "", false
	}
	if vr == "DA" && len(g) == 4 {
		g += "0101"
	}
	return g, true
}

// scrub blanks, with asterisks of the same length, every occurrence of a
// term (compared in ASCII case-insensitively) in v.
func scrub(v []byte, terms []string) []byte {
	out := append([]byte(nil), v...)
	up := asciiUpper(v)
	for _, t := range terms {
		tu := asciiUpper([]byte(t))
		for i := 0; i+len(tu) <= len(up); {
			j := indexFrom(up, tu, i)
			if j < 0 {
				break
			}
			for k := j; k < j+len(tu); k++ {
				out[k] = '*'
			}
			i = j + len(tu)
		}
	}
	return out
}

func indexFrom(s, sub []byte, from int) int {
	if i := strings.Index(string(s[from:]), string(sub)); i >= 0 {
		return from + i
	}
	return -1
}

func asciiUpper(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		out[i] = c
	}
	return out
}

// nameTerms splits a person name into the parts worth scrubbing from
// free text: components and words of two characters or more.
func nameTerms(name string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(name, func(r rune) bool {
		return r == '^' || r == '=' || r == ' ' || r == ',' || r == '\\'
	}) {
		if len(f) >= 2 {
			out = append(out, f)
		}
	}
	return out
}
