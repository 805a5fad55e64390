package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/medgate/medgate/crypto/pseudonym"
	"github.com/medgate/medgate/proxy/mask"
)

var canaries = []string{"Canarywhistle", "Zelda", "Otto", "Lantern", "Pittsburgh", "Allegheny", "Canaryville",
	"MRN12345", "123-45-6789", "555-01", "zelda@example.org", "1928-03-14", "1974-12-25", "pat-canary", "V0000042",
	"Q2FuYXJ5", "15226", "2024-05-12T08:30", "2024-05-10T09:25", "2001-05-06"}

func testKeyer(tb testing.TB) *pseudonym.Keyer {
	k, err := pseudonym.New(bytes.Repeat([]byte{7}, pseudonym.KeySize))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func hipaaMasker(tb testing.TB) *fhirMasker {
	p, ok := mask.Builtin(mask.HIPAASafeHarbor)
	if !ok {
		tb.Fatal("no hipaa-safe-harbor")
	}
	m, err := newFHIRMasker(p, testKeyer(tb), 2024)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func walk(tb testing.TB, m *fhirMasker, in []byte) ([]byte, walkResult) {
	tb.Helper()
	var out bytes.Buffer
	res, err := m.Walk(&out, bytes.NewReader(in))
	if err != nil {
		tb.Fatal(err)
	}
	if !json.Valid(out.Bytes()) {
		tb.Fatalf("output is not JSON: %s", out.Bytes())
	}
	return out.Bytes(), res
}

func TestWalkPatient(t *testing.T) {
	in, _ := os.ReadFile("testdata/patient.json")
	out, res := walk(t, hipaaMasker(t), in)
	for _, c := range canaries {
		if bytes.Contains(out, []byte(c)) {
			t.Errorf("%q crossed", c)
		}
	}
	k := testKeyer(t)
	var p map[string]any
	json.Unmarshal(out, &p)
	want := map[string]any{
		"resourceType":  "Patient",
		"id":            k.Token(pseudonym.KindOther, "Patient/pat-canary-1"),
		"birthDate":     "1934",
		"gender":        "female",
		"active":        true,
		"maritalStatus": map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "W"}}},
	}
	for key, v := range want {
		g, _ := json.Marshal(p[key])
		w, _ := json.Marshal(v)
		if !bytes.Equal(g, w) {
			t.Errorf("%s = %s, want %s", key, g, w)
		}
	}
	for _, gone := range []string{"text", "extension", "name", "telecom", "photo", "_birthDate"} {
		if _, ok := p[gone]; ok {
			t.Errorf("%s crossed", gone)
		}
	}
	addr, _ := json.Marshal(p["address"])
	if string(addr) != `[{"country":"US","postalCode":"152","state":"PA","type":"both","use":"home"}]` {
		t.Errorf("address %s", addr)
	}
	ids, _ := json.Marshal(p["identifier"])
	if !strings.Contains(string(ids), `"value":"`+k.Token(pseudonym.KindPatientID, "MRN12345")+`"`) || !strings.Contains(string(ids), `"system":"urn:oid:1.2.36.146.595.217.0.1"`) {
		t.Errorf("identifier %s", ids)
	}
	link, _ := json.Marshal(p["link"])
	if want := `[{"other":{"reference":"Patient/` + k.Token(pseudonym.KindOther, "Patient/pat-canary-old") + `"},"type":"replaces"}]`; string(link) != want {
		t.Errorf("link %s, want %s", link, want)
	}
	contact, _ := json.Marshal(p["contact"])
	if !strings.Contains(string(contact), `"gender":"male"`) || strings.Contains(string(contact), "telecom") {
		t.Errorf("contact %s", contact)
	}
	if gp, _ := json.Marshal(p["generalPractitioner"]); string(gp) != `[{"display":"Leonard McCoy","reference":"Practitioner/dr-mccoy"}]` {
		t.Errorf("generalPractitioner %s", gp)
	}
	if res.resourceType != "Patient" || res.patient != k.Token(pseudonym.KindOther, "Patient/pat-canary-1") {
		t.Errorf("result %+v", res)
	}
}

func TestWalkBundleReferences(t *testing.T) {
	in, _ := os.ReadFile("testdata/bundle.json")
	out, _ := walk(t, hipaaMasker(t), in)
	for _, c := range canaries {
		if bytes.Contains(out, []byte(c)) {
			t.Errorf("%q crossed", c)
		}
	}
	k := testKeyer(t)
	id := k.Token(pseudonym.KindOther, "Patient/pat-canary-1")
	for _, want := range []string{
		`"fullUrl":"http://fhir.example/fhir/Patient/` + id + `"`,
		`"resourceType":"Patient","id":"` + id + `"`,
		`"subject":{"reference":"Patient/` + id + `"}`,
		`"reference":"http://fhir.example/fhir/Patient/` + id + `/_history/3"`,
		`"patient":{"reference":"Patient/` + id + `"}`,
		`"performer":[{"reference":"#rp1"}]`,
		`"fullUrl":"urn:uuid:4f7c"`,
		`"postalCode":"000"`,
		`"birthDate":"1975"`,
		`"effectiveDateTime":"2024"`,
		`"period":{"start":"2024","end":"2024"}`,
		`"valueQuantity":{"value":182,"unit":"mg/dL"}`,
		`"search":{"mode":"match"}`,
		`"total":3`,
	} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("missing %s", want)
		}
	}
	for _, gone := range []string{`"issued"`, `"link"`} {
		if bytes.Contains(out, []byte(gone)) {
			t.Errorf("%s crossed", gone)
		}
	}
}

func TestWalkRefuses(t *testing.T) {
	tests := map[string]string{
		"not json":                 `{"resourceType": "Patient",`,
		"array":                    `[{"resourceType": "Patient"}]`,
		"string":                   `"Patient"`,
		"no resourceType":          `{"id": "x"}`,
		"empty object":             `{}`,
		"resourceType late":        `{"id": "x", "resourceType": "Patient"}`,
		"nested resourceType late": `{"resourceType": "Bundle", "entry": [{"resource": {"id": "x", "resourceType": "Patient"}}]}`,
		"bad type":                 `{"resourceType": "patient"}`,
		"type not a string":        `{"resourceType": 7}`,
		"two objects":              `{"resourceType": "Patient"} {"resourceType": "Patient"}`,
		"trailing garbage":         `{"resourceType": "Patient"} x`,
		"deep":                     `{"resourceType": "Basic", "x": ` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`,
		"empty":                    ``,
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := hipaaMasker(t).Walk(&bytes.Buffer{}, strings.NewReader(in))
			if !errors.Is(err, ErrNotFHIR) {
				t.Errorf("err = %v", err)
			}
			if err != nil && strings.Contains(err.Error(), "Patient") {
				t.Errorf("error quotes the body: %v", err)
			}
		})
	}
}

func TestWalkKeepsWhatNoRuleSelects(t *testing.T) {
	m, err := newFHIRMasker(&mask.Profile{Name: "none"}, nil, 2024)
	if err != nil {
		t.Fatal(err)
	}
	in := `{"resourceType":"Observation","id":"o\u00e9","valueString":"a\"b\\c\n\u2028<&>","n":[1.50,-2e3,true,false,null],"o":{}}`
	out, _ := walk(t, m, []byte(in))
	var a, b any
	json.Unmarshal([]byte(in), &a)
	json.Unmarshal(out, &b)
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) || !bytes.Contains(out, []byte("1.50")) {
		t.Errorf("got %s", out)
	}
}

func FuzzFHIRWalker(f *testing.F) {
	for _, name := range []string{"testdata/patient.json", "testdata/bundle.json"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"resourceType":"Patient","name":[{"family":"x"}],"_birthDate":{}}`))
	f.Add([]byte(`{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"1"}}]}`))
	hipaa := hipaaMasker(f)
	none, _ := newFHIRMasker(&mask.Profile{Name: "none"}, nil, 2024)
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		_, err := hipaa.Walk(&out, bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrNotFHIR) {
				t.Fatalf("error does not wrap ErrNotFHIR: %v", err)
			}
			return
		}
		if !json.Valid(out.Bytes()) {
			t.Fatalf("masked output is not JSON:\n%s\n%s", in, out.Bytes())
		}
		var again bytes.Buffer
		if _, err := hipaa.Walk(&again, bytes.NewReader(out.Bytes())); err != nil {
			t.Fatalf("masked output does not walk again: %v", err)
		}
		var kept bytes.Buffer
		if _, err := none.Walk(&kept, bytes.NewReader(in)); err != nil {
			t.Fatalf("walks with one profile, not with none: %v", err)
		}
		var a, b any
		if json.Unmarshal(in, &a) == nil {
			json.Unmarshal(kept.Bytes(), &b)
			ja, _ := json.Marshal(a)
			jb, _ := json.Marshal(b)
			if !bytes.Equal(ja, jb) {
				t.Fatalf("an empty profile changed the resource:\n%s\n%s", ja, jb)
			}
		}
	})
}

func BenchmarkWalkBundle(b *testing.B) {
	var in bytes.Buffer
	in.WriteString(`{"resourceType":"Bundle","type":"searchset","entry":[`)
	patient, _ := os.ReadFile("testdata/patient.json")
	for i := range 500 {
		if i > 0 {
			in.WriteByte(',')
		}
		in.WriteString(`{"fullUrl":"http://h/fhir/Patient/1","resource":`)
		in.Write(patient)
		in.WriteString(`}`)
	}
	in.WriteString(`]}`)
	m := hipaaMasker(b)
	b.SetBytes(int64(in.Len()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Walk(io.Discard, bytes.NewReader(in.Bytes())); err != nil {
			b.Fatal(err)
		}
	}
}
