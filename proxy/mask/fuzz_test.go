package mask

import (
	"encoding/json"
	"testing"
)

func FuzzParseProfile(f *testing.F) {
	f.Add([]byte(`{"base":"hipaa-safe-harbor","hl7":[{"field":"PID-7","action":"keep"}]}`))
	f.Add([]byte(`{"base":"dicom-basic","dicom":[{"field":"PatientID","action":"pseudonym","value":"patient-id"}],"dicomOptions":{"retainLongitudinalModifiedDates":true}}`))
	f.Add([]byte(`{"fhir":[{"field":"Patient.name","action":"remove"}]}`))
	f.Add([]byte(`{"hl7":[{"field":"PID-5.1","action":"nonsense"}]}`))
	f.Fuzz(func(t *testing.T, spec []byte) {
		p, err := ParseProfile("fuzzed", spec)
		if err != nil {
			return
		}
		if p.Name != "fuzzed" || p.Version == "" {
			t.Fatalf("profile without name or version: %+v", p)
		}
		for _, list := range [][]Rule{p.DICOM, p.HL7, p.FHIR} {
			for _, r := range list {
				if r.Action == "" {
					t.Fatalf("accepted a rule without an action: %+v", r)
				}
			}
		}
		if _, err := json.Marshal(p); err != nil {
			t.Fatal(err)
		}
	})
}
