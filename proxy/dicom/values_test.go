package dicom

import (
	"testing"

	"github.com/medgate/medgate/proxy/mask"
)

func TestShiftDates(t *testing.T) {
	k := testKeyer(t)
	d, _ := k.ShiftDate("P1", "20200115")
	e, _ := k.ShiftDate("P1", "20201231")
	cases := []struct {
		vr, in, want string
		query, ok    bool
	}{
		{"DA", "20200115", d, false, true},
		{"DA", "20200115-20201231", d + "-" + e, true, true},
		{"DA", "-20201231", "-" + e, true, true},
		{"DA", "20200115-", d + "-", true, true},
		{"DA", "2020.01.15", "", false, false},
		{"DA", "", "", false, true},
		{"DT", "20200115103000.5+0100", d + "103000.5+0100", false, true},
		{"DT", "20200115103000-0500", d + "103000-0500", false, true},
		{"DT", "20200115-20201231", "", true, false},
		{"DT", "2020", "", false, false},
	}
	for _, c := range cases {
		var got string
		var ok bool
		if c.vr == "DA" {
			got, ok = shiftDate(k, "P1", c.in)
		} else {
			got, ok = shiftDateTime(k, "P1", c.in, c.query)
		}
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("%s %q: got %q, %v; want %q, %v", c.vr, c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestGeneralize(t *testing.T) {
	cases := []struct{ vr, kind, in, want string }{
		{"AS", "", "045Y", "040Y"},
		{"AS", "", "093Y", "090Y"},
		{"AS", "", "006M", "000Y"},
		{"DA", "", "19751203", "19750101"},
		{"DT", "", "19751203101010", "1975"},
		{"LO", "zip", "02139-1234", "021"},
		{"LO", "zip", "03601", "000"},
	}
	for _, c := range cases {
		if got, ok := generalize(c.vr, c.kind, c.in); !ok || got != c.want {
			t.Errorf("%s %s %q: %q, %v; want %q", c.vr, c.kind, c.in, got, ok, c.want)
		}
	}
	if _, ok := generalize("AS", "", "45"); ok {
		t.Error("malformed age generalized")
	}
}

func TestScrub(t *testing.T) {
	got := string(scrub([]byte("CT head for doe, john (id 12345) by Dr Smith"), append(nameTerms("Doe^John"), "12345")))
	if want := "CT head for ***, **** (id *****) by Dr Smith"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// Bytes that are not ASCII keep their length.
	in := []byte{0xC4, 0xD6, 'd', 'o', 'e'}
	if out := scrub(in, []string{"DOE"}); len(out) != len(in) || string(out[2:]) != "***" {
		t.Errorf("got %x", out)
	}
}

func TestParseTag(t *testing.T) {
	for in, want := range map[string]uint32{
		"(0010,0010)": 0x00100010, "0010,0020": 0x00100020, "7FE00010": tagPixelData,
		"PatientName": tagPatientName, "StudyInstanceUID": tagStudyUID, "OverlayData": 0x60003000,
	} {
		if got, err := ParseTag(in); err != nil || got != want {
			t.Errorf("%s: %08X, %v", in, got, err)
		}
	}
	if _, err := ParseTag("NotAKeyword"); err == nil {
		t.Error("unknown keyword parsed")
	}
	if Keyword(0x60023000) != "OverlayData" || Keyword(tagPatientID) != "PatientID" {
		t.Error("keywords")
	}
	if dictVR(0x00081110) != "SQ" || dictVR(0x50103000) != "OB" || dictVR(0x00191010) != "" {
		t.Error("dictionary VRs")
	}
}

func TestRulePrecedence(t *testing.T) {
	m, err := NewMasker(&mask.Profile{DICOM: []mask.Rule{
		{Field: "(60xx,3000)", Action: mask.Remove},
		{Field: "StudyInstanceUID", Action: mask.Keep},
		{Field: "ReferencedStudySequence/StudyInstanceUID", Action: mask.Empty},
		{Field: "(0008,1110)/(0008,1115)/(0020,000D)", Action: mask.Replace},
		{Field: mask.DICOMPrivateTags, Action: mask.Remove},
	}}, mask.Env{Keyer: testKeyer(t)})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		tag   uint32
		stack []uint32
		want  action
	}{
		{tagStudyUID, nil, actKeep},
		{tagStudyUID, []uint32{0x00081110}, actEmpty},
		{tagStudyUID, []uint32{0x00400275, 0x00081110}, actEmpty},
		{tagStudyUID, []uint32{0x00081110, 0x00081115}, actReplace},
		{tagStudyUID, []uint32{0x00081115}, actKeep},
		{0x60023000, nil, actRemove},
		{0x60024000, nil, actKeep},
		{0x00291010, nil, actRemove},
		{0x00100010, nil, actKeep},
	}
	for _, c := range cases {
		if got := m.ruleFor(c.tag, "", c.stack).act; got != c.want {
			t.Errorf("%s in %x: action %d, want %d", tagString(c.tag), c.stack, got, c.want)
		}
	}
}
