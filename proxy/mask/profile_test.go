package mask

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBuiltin(t *testing.T) {
	p, ok := Builtin(HIPAASafeHarbor)
	if !ok {
		t.Fatal("hipaa-safe-harbor is not built in")
	}
	if p.Name != HIPAASafeHarbor || !strings.HasPrefix(p.Version, "sha256:") {
		t.Errorf("name %q version %q", p.Name, p.Version)
	}
	if len(p.HL7) == 0 || len(p.FHIR) == 0 {
		t.Errorf("hl7 %d rules, fhir %d rules", len(p.HL7), len(p.FHIR))
	}
	p.HL7[0].Action = Keep
	q, _ := Builtin(HIPAASafeHarbor)
	if q.HL7[0].Action == Keep {
		t.Error("changing a copy changed the registry")
	}
	if _, ok := Builtin("no-such-profile"); ok {
		t.Error("found a profile that does not exist")
	}
}

func TestBuiltinRulesValidate(t *testing.T) {
	for _, name := range BuiltinNames() {
		p, _ := Builtin(name)
		errs := validateRules("hl7", p.HL7, func(f string) error { _, err := ParseHL7Path(f); return err })
		errs = append(errs, validateRules("fhir", p.FHIR, func(f string) error { _, err := ParseFHIRPath(f); return err })...)
		if err := errors.Join(errs...); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestRegisterBuiltinTwicePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	registerBuiltin(&Profile{Name: HIPAASafeHarbor})
}

func TestParseProfile(t *testing.T) {
	base, _ := Builtin(HIPAASafeHarbor)
	p, err := ParseProfile("site-a", []byte(`{
		"base": "hipaa-safe-harbor",
		"hl7": [{"field": "PID-7", "action": "dateshift"}, {"field": "OBX-5", "action": "empty"}],
		"fhir": [{"field": "Patient.birthDate", "action": "dateshift"}],
		"dicom": [{"field": "(0010,0010)", "action": "pseudonym", "value": "name"}, {"field": "ReferencedStudySequence/StudyInstanceUID", "action": "uid"}, {"field": "(60xx,3000)", "action": "remove"}, {"field": "private", "action": "remove"}, {"field": "StudyDescription", "action": "clean"}],
		"dicomOptions": {"retainPatientCharacteristics": true}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "site-a" || p.Version == base.Version {
		t.Errorf("name %q version %q (base %q)", p.Name, p.Version, base.Version)
	}
	if got, want := len(p.HL7), len(base.HL7)+2; got != want {
		t.Errorf("%d hl7 rules, want %d", got, want)
	}
	if diff := cmp.Diff(Rule{Field: "OBX-5", Action: Empty}, p.HL7[len(p.HL7)-1]); diff != "" {
		t.Errorf("last rule (-want +got):\n%s", diff)
	}
	if !p.DICOMOptions.RetainPatientCharacteristics {
		t.Error("dicomOptions not applied")
	}
	again, _ := ParseProfile("site-b", []byte(`{"base":"hipaa-safe-harbor","hl7":[{"field":"PID-7","action":"dateshift"},{"field":"OBX-5","action":"empty"}],"fhir":[{"field":"Patient.birthDate","action":"dateshift"}],"dicom":[{"field":"(0010,0010)","action":"pseudonym","value":"name"},{"field":"ReferencedStudySequence/StudyInstanceUID","action":"uid"},{"field":"(60xx,3000)","action":"remove"},{"field":"private","action":"remove"},{"field":"StudyDescription","action":"clean"}],"dicomOptions":{"retainPatientCharacteristics":true}}`))
	if again.Version != p.Version {
		t.Errorf("same content, versions %q and %q", p.Version, again.Version)
	}
	empty, err := ParseProfile("nothing", []byte(`{}`))
	if err != nil || len(empty.HL7) != 0 {
		t.Errorf("empty spec: %v, %d rules", err, len(empty.HL7))
	}
}

func TestParseProfileErrors(t *testing.T) {
	tests := []struct {
		name, spec string
		want       []string
	}{
		{"not json", `{`, []string{"spec:"}},
		{"unknown field", `{"hl8": []}`, []string{`unknown field "hl8"`}},
		{"trailing", `{} {}`, []string{"data after"}},
		{"unknown base", `{"base": "gdpr"}`, []string{`base: no built-in profile "gdpr"`}},
		{"bad action", `{"hl7": [{"field": "PID-5", "action": "scramble"}]}`, []string{`hl7[0]: action: "scramble" is not one of`}},
		{"missing action", `{"fhir": [{"field": "Patient.name"}]}`, []string{"fhir[0]: action: missing"}},
		{"bad hl7 path", `{"hl7": [{"field": "PID-5", "action": "keep"}, {"field": "pid-5", "action": "keep"}]}`, []string{`hl7[1]: field: "pid-5"`}},
		{"msh delimiters", `{"hl7": [{"field": "MSH-2", "action": "empty"}]}`, []string{"hl7[0]: field:", "delimiters"}},
		{"bad fhir path", `{"fhir": [{"field": "name", "action": "remove"}]}`, []string{"fhir[0]: field:"}},
		{"bad dicom field", `{"dicom": [{"field": "(0010,00ZZ)", "action": "remove"}]}`, []string{"dicom[0]: field:"}},
		{"clean is for dicom", `{"hl7": [{"field": "NTE-3", "action": "clean"}]}`, []string{`hl7[0]: action: "clean" is not one of`}},
		{"bad kind", `{"hl7": [{"field": "PID-3.1", "action": "pseudonym", "value": "mrn"}]}`, []string{"hl7[0]: value: pseudonym kind"}},
		{"value on empty", `{"hl7": [{"field": "PID-3.1", "action": "empty", "value": "x"}]}`, []string{"hl7[0]: value: action empty takes no value"}},
		{"all at once", `{"hl7": [{"field": "X", "action": "keep"}], "fhir": [{"field": "Patient.name", "action": "nope"}]}`, []string{"hl7[0]: field:", "fhir[0]: action:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseProfile("p", []byte(tt.spec))
			if !errors.Is(err, ErrProfile) {
				t.Fatalf("err = %v, want ErrProfile", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseHL7Path(t *testing.T) {
	tests := []struct {
		in   string
		want HL7Path
		err  bool
	}{
		{in: "PID", want: HL7Path{Segment: "PID", Rep: Any}},
		{in: "Z*", want: HL7Path{Segment: "Z", Prefix: true, Rep: Any}},
		{in: "ZP*-3", want: HL7Path{Segment: "ZP", Prefix: true, Field: 3, Rep: Any}},
		{in: "PID-5", want: HL7Path{Segment: "PID", Field: 5, Rep: Any}},
		{in: "NK1-*", want: HL7Path{Segment: "NK1", Field: Any, Rep: Any}},
		{in: "PID-3[*].1", want: HL7Path{Segment: "PID", Field: 3, Rep: Any, Component: 1}},
		{in: "PID-3[2].1.4", want: HL7Path{Segment: "PID", Field: 3, Rep: 2, Component: 1, Sub: 4}},
		{in: "PID-5.*", want: HL7Path{Segment: "PID", Field: 5, Rep: Any, Component: Any}},
		{in: "MSH-7", want: HL7Path{Segment: "MSH", Field: 7, Rep: Any}},
		{in: "pid-5", err: true},
		{in: "PID-0", err: true},
		{in: "PID-05", err: true},
		{in: "PID-5.1.2.3", err: true},
		{in: "PID-3[1", err: true},
		{in: "PID-3[0]", err: true},
		{in: "PID-", err: true},
		{in: "PIDX-1", err: true},
		{in: "MSH-1", err: true},
		{in: "*", err: true},
		{in: "", err: true},
	}
	for _, tt := range tests {
		got, err := ParseHL7Path(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("%q: err = %v, want error %v", tt.in, err, tt.err)
			continue
		}
		if !tt.err && got != tt.want {
			t.Errorf("%q = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseFHIRPath(t *testing.T) {
	tests := []struct {
		in   string
		want FHIRPath
		err  bool
	}{
		{in: "Patient.name", want: FHIRPath{Resource: "Patient", Elements: []string{"name"}}},
		{in: "*.text", want: FHIRPath{Resource: "*", Elements: []string{"text"}}},
		{in: "Patient.address.*", want: FHIRPath{Resource: "Patient", Elements: []string{"address", "*"}}},
		{in: "Patient", err: true},
		{in: "patient.name", err: true},
		{in: "Patient.Name", err: true},
		{in: "Patient..name", err: true},
		{in: "Patient.resourceType", err: true},
		{in: "Patient.name[0]", err: true},
	}
	for _, tt := range tests {
		got, err := ParseFHIRPath(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("%q: err = %v, want error %v", tt.in, err, tt.err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); !tt.err && diff != "" {
			t.Errorf("%q (-want +got):\n%s", tt.in, diff)
		}
	}
}
