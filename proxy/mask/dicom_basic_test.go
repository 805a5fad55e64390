package mask

import (
	"regexp"
	"strings"
	"testing"
)

func TestDICOMBasicTable(t *testing.T) {
	table := DICOMBasicTable()
	if len(table) < 450 {
		t.Errorf("table has %d rows; PS3.15 Table E.1-1 lists more", len(table))
	}
	field := regexp.MustCompile(`^\([0-9A-Fx]{4},[0-9A-Fx]{4}\)$`)
	codes := map[string]bool{"X": true, "Z": true, "D": true, "U": true, "K": true, "C": true,
		"X/Z": true, "X/D": true, "Z/D": true, "X/Z/D": true, "X/Z/U*": true}
	seen := map[string]bool{}
	for _, a := range table {
		if !field.MatchString(a.Field) {
			t.Errorf("%s: field does not parse", a.Field)
		}
		if seen[a.Field] {
			t.Errorf("%s listed twice", a.Field)
		}
		seen[a.Field] = true
		if !codes[a.Basic] {
			t.Errorf("%s: basic code %q", a.Field, a.Basic)
		}
		if a.Keyword == "" || len(a.VR) != 2 {
			t.Errorf("%s: keyword %q, VR %q", a.Field, a.Keyword, a.VR)
		}
		for _, o := range strings.Fields(a.Options) {
			if !regexp.MustCompile(`^[LPVD]:[KC]$`).MatchString(o) {
				t.Errorf("%s: option %q", a.Field, o)
			}
		}
		if a.VR == "UI" && a.Basic != "U" && a.Field != "(0000,1000)" {
			t.Errorf("%s: a UID attribute that is not remapped", a.Field)
		}
	}
}

func rulesByField(rules []Rule) map[string]Rule {
	m := map[string]Rule{}
	for _, r := range rules {
		m[r.Field] = r
	}
	return m
}

func TestDICOMBasicRules(t *testing.T) {
	cases := []struct {
		name string
		opts DICOMOptions
		want map[string]Action
	}{
		{"basic", DICOMOptions{}, map[string]Action{
			"(0010,0010)":    Empty,     // Patient's Name: Z
			"(0010,0020)":    Pseudonym, // Patient ID: Z, a keyed pseudonym here
			"(0020,000D)":    UIDRemap,  // Study Instance UID: U
			"(0008,0020)":    Empty,     // Study Date: Z
			"(0008,0022)":    Empty,     // Acquisition Date: X/Z
			"(0008,0021)":    Replace,   // Series Date: X/D
			"(0008,0023)":    Replace,   // Content Date: Z/D
			"(0008,0080)":    Replace,   // Institution Name: X/Z/D
			"(0008,1140)":    UIDRemap,  // Referenced Image Sequence: X/Z/U*
			"(0010,1010)":    Remove,    // Patient's Age: X
			"(0018,1000)":    Replace,   // Device Serial Number: X/Z/D
			"(0008,1030)":    Remove,    // Study Description: X
			"(0008,0201)":    Remove,    // Timezone Offset From UTC: X
			"(0040,A730)":    Replace,   // Content Sequence: D
			"(60xx,3000)":    Remove,    // Overlay Data: X
			"(50xx,xxxx)":    Remove,    // Curve Data: X
			"(0010,0030)":    Empty,     // Patient's Birth Date: Z
			DICOMPrivateTags: Remove,
		}},
		{"all options", DICOMOptions{RetainLongitudinalModifiedDates: true, RetainPatientCharacteristics: true,
			RetainDeviceIdentity: true, CleanDescriptors: true}, map[string]Action{
			"(0008,0020)": DateShift, // Study Date
			"(0008,002A)": DateShift, // Acquisition DateTime
			"(0008,0030)": Keep,      // Study Time: times of day stay
			"(0008,0201)": Remove,    // Timezone Offset From UTC
			"(0010,0030)": Empty,     // Patient's Birth Date: no option applies
			"(0010,1010)": Keep,      // Patient's Age
			"(0010,2110)": Clean,     // Allergies
			"(0018,1000)": Keep,      // Device Serial Number
			"(0018,1002)": Keep,      // Device UID: device identity wins over U
			"(0008,1030)": Clean,     // Study Description
			"(0008,1084)": Clean,     // Admitting Diagnoses Code Sequence
			"(0010,0010)": Empty,
		}},
	}
	for _, c := range cases {
		rules := rulesByField(DICOMBasicRules(c.opts))
		for f, want := range c.want {
			if got := rules[f].Action; got != want {
				t.Errorf("%s: %s: %s, want %s", c.name, f, got, want)
			}
		}
	}
	if rulesByField(DICOMBasicRules(DICOMOptions{}))["(0010,0020)"].Value != "patient-id" {
		t.Error("patient ID pseudonym is not of the patient-id kind")
	}
}

func TestDICOMDeidentification(t *testing.T) {
	all := DICOMOptions{RetainLongitudinalModifiedDates: true, RetainPatientCharacteristics: true, RetainDeviceIdentity: true, CleanDescriptors: true}
	codes := DICOMDeidentificationCodes(all)
	want := []string{"113100", "113105", "113107", "113108", "113109"}
	if len(codes) != len(want) {
		t.Fatalf("codes %v", codes)
	}
	for i, c := range codes {
		if c.Value != want[i] || c.Scheme != "DCM" || c.Meaning == "" || len(c.Meaning) > 64 {
			t.Errorf("code %d: %+v", i, c)
		}
	}
	if got := DICOMDeidentificationCodes(DICOMOptions{}); len(got) != 1 || got[0].Value != "113100" {
		t.Errorf("basic codes %v", got)
	}
	for _, v := range strings.Split(DICOMDeidentificationMethod(all), `\`) {
		if len(v) == 0 || len(v) > 64 {
			t.Errorf("method value %q is not a valid LO", v)
		}
	}
	p, ok := Builtin(DICOMBasic)
	if !ok || !p.DICOMBasic || p.Version != DICOMBasicVersion {
		t.Errorf("built-in %s: %+v", DICOMBasic, p)
	}
}
