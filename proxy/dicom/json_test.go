package dicom

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/medgate/medgate/proxy/mask"
)

// Real Orthanc answers, captured for the HTTP codec's tests.
const orthancData = "../httpx/testdata/orthanc/"

func TestMaskJSONOrthanc(t *testing.T) {
	m := basicMasker(t, mask.DICOMOptions{})
	for _, name := range []string{"qido.json", "metadata.json"} {
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(orthancData + name)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			obj, err := m.MaskJSON(&out, bytes.NewReader(in))
			if err != nil {
				t.Fatal(err)
			}
			var before, after []map[string]map[string]any
			if err := json.Unmarshal(in, &before); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(out.Bytes(), &after); err != nil {
				t.Fatalf("masked DICOM JSON does not parse: %v", err)
			}
			if len(after) != len(before) {
				t.Fatalf("%d data sets, want %d", len(after), len(before))
			}
			for i, ds := range before {
				study := ds["0020000D"]["Value"].([]any)[0].(string)
				pid := ds["00100020"]["Value"].([]any)[0].(string)
				for _, orig := range []string{study, `"` + pid + `"`} {
					if bytes.Contains(out.Bytes(), []byte(orig)) {
						t.Errorf("data set %d: original identifier %s left", i, orig)
					}
				}
				got := after[i]
				if v := got["0020000D"]["Value"].([]any)[0]; v != m.keyer.UID(study) {
					t.Errorf("study UID %v, want the remap", v)
				}
				if _, ok := got["00100010"]["Value"]; ok {
					t.Errorf("patient name kept: %v", got["00100010"])
				}
				if _, ok := got["00100010"]; !ok {
					t.Errorf("patient name removed, want it empty")
				}
				if u, ok := got["00081190"]; ok && !strings.Contains(u["Value"].([]any)[0].(string), m.keyer.UID(study)) {
					t.Errorf("retrieve URL does not name the remapped study: %v", u)
				}
				for tag, e := range got {
					if tag[3]%2 == 1 {
						t.Errorf("private attribute %s kept", tag)
					}
					if u, ok := e["BulkDataURI"].(string); ok && !strings.Contains(u, m.keyer.UID(study)) {
						t.Errorf("bulk data URI of %s does not name the remapped study", tag)
					}
				}
			}
			if obj.PatientPseudonym == "" {
				t.Error("no patient pseudonym reported")
			}
			sum := sha256.Sum256(out.Bytes())
			if obj.SHA256 != hex.EncodeToString(sum[:]) {
				t.Error("digest is not that of the output")
			}
		})
	}
}

func TestMaskJSONCases(t *testing.T) {
	m := basicMasker(t, mask.DICOMOptions{RetainLongitudinalModifiedDates: true, CleanDescriptors: true})
	k := m.keyer
	tests := []struct {
		name, in, want string
		err            bool
	}{
		{name: "empty array", in: `[]`, want: `[]`},
		{name: "single object", in: `{"00100020":{"vr":"LO","Value":["P1"]}}`,
			want: `{"00100020":{"vr":"LO","Value":["` + k.Token("patient-id", "P1") + `"]}}`},
		{name: "dates shift by the ID that comes later",
			in:   `[{"00080020":{"Value":["20040119"],"vr":"DA"},"00100020":{"vr":"LO","Value":["P1"]}}]`,
			want: `[{"00080020":{"vr":"DA","Value":["` + mustShift(t, m, "P1", "20040119") + `"]},"00100020":{"vr":"LO","Value":["` + k.Token("patient-id", "P1") + `"]}}]`},
		{name: "names of all three groups go", in: `[{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^J","Ideographic":"x"}]}}]`,
			want: `[{"00100010":{"vr":"PN"}}]`},
		{name: "numbers kept raw", in: `[{"00280010":{"vr":"US","Value":[512]},"00201208":{"vr":"IS","Value":[3]}}]`,
			want: `[{"00201208":{"vr":"IS","Value":[3]},"00280010":{"vr":"US","Value":[512]}}]`},
		{name: "sequence items masked by path", in: `[{"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.3"]}}]}}]`,
			want: `[{"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["` + k.UID("1.2.3") + `"]}}]}}]`},
		{name: "private attributes go", in: `[{"00091001":{"vr":"LO","Value":["x"]},"00090010":{"vr":"LO","Value":["ACME"]}}]`, want: `[{}]`},
		{name: "group length goes", in: `[{"00080000":{"vr":"UL","Value":[4]}}]`, want: `[{}]`},
		{name: "URL with a query goes empty", in: `[{"00081190":{"vr":"UR","Value":["http://h/studies/1.2?x=1"]}}]`, want: `[{"00081190":{"vr":"UR"}}]`},
		{name: "unknown field", in: `[{"00100010":{"vr":"PN","Value":[],"Extra":1}}]`, err: true},
		{name: "bad tag", in: `[{"0010001G":{"vr":"PN"}}]`, err: true},
		{name: "repeated tag", in: `[{"00100010":{"vr":"PN"},"00100010":{"vr":"PN"}}]`, err: true},
		{name: "unknown VR", in: `[{"00100010":{"vr":"ZZ"}}]`, err: true},
		{name: "number where text belongs", in: `[{"00100020":{"vr":"LO","Value":[1]}}]`, err: true},
		{name: "backslash inside a value", in: `[{"00081030":{"vr":"LO","Value":["a\\b"]}}]`, err: true},
		{name: "not JSON", in: `[{"00100010"`, err: true},
		{name: "trailing data", in: `[] []`, err: true},
		{name: "scalar", in: `"x"`, err: true},
		{name: "two forms", in: `[{"7FE00010":{"vr":"OW","InlineBinary":"AA==","BulkDataURI":"x"}}]`, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := m.MaskJSON(&out, strings.NewReader(tt.in))
			if tt.err {
				if err == nil || !errors.Is(err, mask.ErrUnmaskable) {
					t.Fatalf("err = %v, want an unmaskable error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, out.String()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func mustShift(t *testing.T, m *Masker, id, date string) string {
	s, err := m.keyer.ShiftDate(id, date)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMaskURL(t *testing.T) {
	m := basicMasker(t, mask.DICOMOptions{})
	k := m.keyer
	tests := []struct{ in, want string }{
		{"/dicom-web/studies/1.2.3", "/dicom-web/studies/" + k.UID("1.2.3")},
		{"http://h:1/dicom-web/studies/1.2/series/3.4/instances/5.6/frames/1",
			"http://h:1/dicom-web/studies/" + k.UID("1.2") + "/series/" + k.UID("3.4") + "/instances/" + k.UID("5.6") + "/frames/1"},
		{"/dicom-web/studies", "/dicom-web/studies"},
		{"/dicom-web/studies/", "/dicom-web/studies/"},
		{"/dicom-web/studies/abc", ""},
		{"/dicom-web/studies/1.2?includefield=all", ""},
	}
	for _, tt := range tests {
		got, ok := m.MaskURL(tt.in)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("MaskURL(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
	ix := NewIndex(0)
	mi := m.WithIndex(ix)
	mi.MaskURL("/studies/1.2.3")
	if o, ok := ix.Original(k.UID("1.2.3")); !ok || o != "1.2.3" {
		t.Errorf("index does not restore a remapped URL UID: %q %v", o, ok)
	}
}

// FuzzMaskJSON checks that the DICOM JSON masker never panics, that what
// it accepts comes out as JSON, and that it is deterministic.
func FuzzMaskJSON(f *testing.F) {
	for _, name := range []string{"qido.json", "metadata.json"} {
		if b, err := os.ReadFile(orthancData + name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"00100020":{"vr":"LO","Value":["P1"]},"00081199":{"vr":"SQ","Value":[{"00100010":{"vr":"PN","Value":[{"Alphabetic":"A"}]}}]}}`))
	m := basicMasker(f, mask.DICOMOptions{RetainLongitudinalModifiedDates: true, CleanDescriptors: true})
	f.Fuzz(func(t *testing.T, in []byte) {
		var a, b bytes.Buffer
		_, errA := m.MaskJSON(&a, bytes.NewReader(in))
		_, errB := m.MaskJSON(&b, bytes.NewReader(in))
		if (errA == nil) != (errB == nil) || !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Fatal("masking is not deterministic")
		}
		if errA != nil {
			if !errors.Is(errA, mask.ErrUnmaskable) {
				var e *Error
				if !errors.As(errA, &e) {
					t.Fatalf("error of an unexpected kind: %v", errA)
				}
			}
			return
		}
		if !json.Valid(a.Bytes()) {
			t.Fatalf("masked output is not JSON: %q", a.Bytes())
		}
	})
}
