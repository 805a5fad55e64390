package dicom

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/medgate/medgate/proxy/mask"
)

func maskBytes(t testing.TB, m *Masker, ds []byte, s syntax, stored bool) ([]byte, mask.Object, error) {
	t.Helper()
	var out bytes.Buffer
	obj := m.object("C-STORE-RQ")
	// One byte at a time: every header and value straddles reads.
	r := bufio.NewReaderSize(iotest.OneByteReader(bytes.NewReader(ds)), 16)
	err := m.maskDataSet(&out, r, s, false, stored, &obj)
	return out.Bytes(), obj, err
}

func TestMaskSampleFiles(t *testing.T) {
	m := basicMasker(t, mask.DICOMOptions{})
	for _, f := range sampleFiles {
		t.Run(f.name, func(t *testing.T) {
			p := readPart10(t, samplePath(f.name))
			s, ok := syntaxOf(p.ts)
			if !ok {
				t.Fatalf("syntax %s", p.ts)
			}
			out, obj, err := maskBytes(t, m, p.dataset, s, true)
			if err != nil {
				t.Fatal(err)
			}
			checkMasked(t, m, p.dataset, out, s, true)
			before, _ := parseTree(p.dataset, s)
			if n := find(before, tagPatientName); n != nil && len(trimValue(n.value)) > 3 {
				if bytes.Contains(out, []byte(trimValue(n.value))) {
					t.Errorf("patient name still in the output")
				}
			}
			if id := find(before, tagPatientID); id != nil && trimValue(id.value) != "" {
				if obj.PatientPseudonym != m.keyer.Token("patient-id", trimValue(id.value)) {
					t.Errorf("report pseudonym %q", obj.PatientPseudonym)
				}
			}
			if n := find(before, tagSOPInstance); n != nil && obj.InstanceUID != m.keyer.UID(trimValue(n.value)) {
				t.Errorf("report instance UID %q", obj.InstanceUID)
			}
		})
	}
}

func TestMaskOptions(t *testing.T) {
	p := readPart10(t, samplePath("CT_small.dcm"))
	s, _ := syntaxOf(p.ts)
	before, _ := parseTree(p.dataset, s)
	id := trimValue(find(before, tagPatientID).value)
	studyDate := trimValue(find(before, 0x00080020).value)

	t.Run("basic", func(t *testing.T) {
		m := basicMasker(t, mask.DICOMOptions{})
		out, _, err := maskBytes(t, m, p.dataset, s, true)
		if err != nil {
			t.Fatal(err)
		}
		after, _ := parseTree(out, s)
		if v := find(after, 0x00080020); v == nil || len(v.value) != 0 {
			t.Errorf("study date not emptied")
		}
		if find(after, 0x00101010) != nil || find(after, 0x00101030) != nil {
			t.Errorf("age or weight kept without the patient characteristics option")
		}
		if find(after, tagLongitudinalModified) != nil {
			t.Errorf("Longitudinal Temporal Information Modified added without the option")
		}
	})
	t.Run("all options", func(t *testing.T) {
		m := basicMasker(t, mask.DICOMOptions{RetainLongitudinalModifiedDates: true, RetainPatientCharacteristics: true,
			RetainDeviceIdentity: true, CleanDescriptors: true})
		out, _, err := maskBytes(t, m, p.dataset, s, true)
		if err != nil {
			t.Fatal(err)
		}
		checkMasked(t, m, p.dataset, out, s, true)
		after, _ := parseTree(out, s)
		want, _ := m.keyer.ShiftDate(id, studyDate)
		if got := trimValue(find(after, 0x00080020).value); got != want || got == studyDate {
			t.Errorf("study date %q, want %q shifted", got, want)
		}
		if v := find(after, tagLongitudinalModified); v == nil || trimValue(v.value) != "MODIFIED" {
			t.Errorf("Longitudinal Temporal Information Modified not MODIFIED")
		}
		if find(after, 0x00101030) == nil {
			t.Errorf("weight removed with the patient characteristics option")
		}
		if v := find(after, 0x00080030); v == nil || !bytes.Equal(v.value, find(before, 0x00080030).value) {
			t.Errorf("study time changed with the modified dates option")
		}
		cs := find(after, tagDeidCodeSeq)
		if cs == nil || len(cs.items) != 5 {
			t.Fatalf("code sequence has %v items, want 5", cs)
		}
	})
}

func TestMaskCustomRules(t *testing.T) {
	p := readPart10(t, samplePath("CT_small.dcm"))
	s, _ := syntaxOf(p.ts)
	prof := &mask.Profile{Name: "custom", Version: "1", DICOM: []mask.Rule{
		{Field: "PatientName", Action: mask.Pseudonym, Value: "name"},
		{Field: "(0010,1010)", Action: mask.Generalize},
		{Field: "ReferencedImageSequence/ReferencedSOPInstanceUID", Action: mask.UIDRemap},
		{Field: "(0008,0020)", Action: mask.Replace, Value: "20000101"},
		{Field: mask.DICOMPrivateTags, Action: mask.Remove},
	}}
	m, err := NewMasker(prof, mask.Env{Keyer: testKeyer(t)})
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := maskBytes(t, m, p.dataset, s, true)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := parseTree(p.dataset, s)
	after, _ := parseTree(out, s)
	if got, want := trimValue(find(after, tagPatientName).value), m.keyer.Token("name", trimValue(find(before, tagPatientName).value)); got != want {
		t.Errorf("name %q, want %q", got, want)
	}
	if got := trimValue(find(after, 0x00101010).value); got != "" && !strings.HasSuffix(got, "0Y") {
		t.Errorf("age %q not in a band", got)
	}
	if got := trimValue(find(after, 0x00080020).value); got != "20000101" {
		t.Errorf("replaced study date %q", got)
	}
	if find(after, tagPatientIDForTest) == nil {
		t.Errorf("patient ID removed by a profile that does not name it")
	}
	if find(after, tagIdentityRem) != nil {
		t.Errorf("custom profile without the basic profile claims identity removed")
	}
	if _, err := NewMasker(&mask.Profile{DICOM: []mask.Rule{{Field: "NoSuchKeyword", Action: mask.Remove}}}, mask.Env{}); err == nil {
		t.Errorf("unknown keyword accepted")
	}
	if _, err := NewMasker(&mask.Profile{DICOM: []mask.Rule{{Field: "PatientID", Action: mask.Pseudonym}}}, mask.Env{}); err == nil {
		t.Errorf("pseudonym without a key accepted")
	}
}

const tagPatientIDForTest = tagPatientID

func TestMaskDeferredOverflow(t *testing.T) {
	// A large group 0008 element before the patient's ID: the run gives
	// up waiting, dates it held are emptied, and nothing is lost.
	m := basicMasker(t, mask.DICOMOptions{RetainLongitudinalModifiedDates: true})
	var ds []byte
	el := func(tag uint32, vr string, v []byte) {
		ds = explicitLE.appendHeader(ds, tag, vr, uint32(len(v)))
		ds = append(ds, v...)
	}
	el(0x00080020, "DA", []byte("20200102"))
	el(0x00080070, "LO", []byte("ACME"))
	el(0x00080119, "UC", bytes.Repeat([]byte("a"), maxHeld+10))
	el(tagPatientID, "LO", []byte("PID1"))
	el(0x00100030, "DA", []byte("19700101"))
	el(0x00200010, "SH", []byte("S1"))
	out, _, err := maskBytes(t, m, ds, explicitLE, true)
	if err != nil {
		t.Fatal(err)
	}
	after, err := parseTree(out, explicitLE)
	if err != nil {
		t.Fatal(err)
	}
	if v := find(after, 0x00080020); v == nil || len(v.value) != 0 {
		t.Errorf("held date not emptied after giving up")
	}
	if v := find(after, 0x00080070); v == nil || trimValue(v.value) != "ACME" {
		t.Errorf("manufacturer lost")
	}
}
