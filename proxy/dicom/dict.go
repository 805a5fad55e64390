package dicom

import (
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// dict.txt is the PS3.6 data dictionary: one line per standard attribute,
// "ggggeeee<TAB>VR<TAB>Keyword", with "xx" in the group of the repeating
// groups 50xx, 60xx and 7Fxx. Multi-VR attributes carry one of their VRs.
//
//go:embed dict.txt
var dictText string

type dictEntry struct {
	vr      string
	keyword string
}

type dictionary struct {
	byTag     map[uint32]dictEntry
	byKeyword map[string]uint32
}

var dict = sync.OnceValue(func() *dictionary {
	d := &dictionary{byTag: make(map[uint32]dictEntry, 5000), byKeyword: make(map[string]uint32, 5000)}
	for line := range strings.SplitSeq(dictText, "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			continue
		}
		t, err := strconv.ParseUint(strings.ReplaceAll(f[0], "XX", "00"), 16, 32)
		if err != nil {
			continue
		}
		d.byTag[uint32(t)] = dictEntry{vr: f[1], keyword: f[2]}
		d.byKeyword[f[2]] = uint32(t)
	}
	return d
})

// repeatingBase maps a tag of the repeating groups 50xx, 60xx and 7Fxx
// to its dictionary tag (group 5000, 6000, 7F00).
func repeatingBase(t uint32) uint32 {
	switch g := t >> 16; {
	case g >= 0x5000 && g <= 0x50FF && g%2 == 0,
		g >= 0x6000 && g <= 0x60FF && g%2 == 0,
		g >= 0x7F00 && g <= 0x7FFF && g%2 == 0 && t != tagPixelData:
		return t &^ 0x00FF0000
	}
	return t
}

// dictVR returns the VR of a standard attribute, "" if unknown.
func dictVR(t uint32) string {
	if e, ok := dict().byTag[t]; ok {
		return e.vr
	}
	if e, ok := dict().byTag[repeatingBase(t)]; ok {
		return e.vr
	}
	return ""
}

// Keyword returns the PS3.6 keyword of a standard attribute, "" if unknown.
func Keyword(t uint32) string {
	if e, ok := dict().byTag[t]; ok {
		return e.keyword
	}
	return dict().byTag[repeatingBase(t)].keyword
}

// ParseTag reads a tag written as "(gggg,eeee)", "gggg,eeee" or
// "ggggeeee" (hexadecimal), or a PS3.6 keyword such as "PatientName".
func ParseTag(s string) (uint32, error) {
	s = strings.TrimSpace(s)
	h := strings.TrimSuffix(strings.TrimPrefix(s, "("), ")")
	h = strings.ReplaceAll(h, ",", "")
	if len(h) == 8 {
		if t, err := strconv.ParseUint(h, 16, 32); err == nil {
			return uint32(t), nil
		}
	}
	if t, ok := dict().byKeyword[s]; ok {
		return t, nil
	}
	return 0, fmt.Errorf("dicom: %q is neither a tag nor a known keyword", s)
}

func tagString(t uint32) string { return fmt.Sprintf("(%04X,%04X)", t>>16, t&0xFFFF) }
