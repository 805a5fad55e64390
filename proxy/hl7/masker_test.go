package hl7

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/medgate/medgate/crypto/pseudonym"
	"github.com/medgate/medgate/proxy/mask"
)

// canaries are patient data in testdata's messages that must never cross.
var canaries = []string{"Canarywhistle", "Zelda", "Lantern", "Pittsburgh", "Allegheny", "ALLEGHENY",
	"MRN12345", "123-45-6789", "PA99887766", "555-01", "zelda@example.org", "19280314", "20240510092626",
	"Canary Widgets", "EXT-777", "ACCT-555", "V0000042", "GRP-42", "ORD-9981", "ACC-4471", "(763)257-8511", "15226"}

func testKeyer(tb testing.TB) *pseudonym.Keyer {
	k, err := pseudonym.New(bytes.Repeat([]byte{7}, pseudonym.KeySize))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func hipaaCodec(tb testing.TB) *Codec {
	p, ok := mask.Builtin(mask.HIPAASafeHarbor)
	if !ok {
		tb.Fatal("no hipaa-safe-harbor profile")
	}
	c, err := New(p, mask.Env{Keyer: testKeyer(tb)}, Config{})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func segment(tb testing.TB, msg []byte, name string) *Segment {
	m, err := Parse(msg)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range m.Segments {
		if m.Segments[i].Name == name {
			return &m.Segments[i]
		}
	}
	return nil
}

func TestHIPAASafeHarbor(t *testing.T) {
	c := hipaaCodec(t)
	k := testKeyer(t)
	in, err := os.ReadFile("testdata/adt_a01.hl7")
	if err != nil {
		t.Fatal(err)
	}
	out, obj, err := c.Mask(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, canary := range canaries {
		if bytes.Contains(out, []byte(canary)) {
			t.Errorf("%q crossed", canary)
		}
	}
	mrn := k.Token(pseudonym.KindPatientID, "MRN12345")
	if obj.Protocol != "hl7" || obj.Operation != "ADT^A01" || obj.PatientPseudonym != mrn || len(obj.SHA256) != 64 ||
		obj.Profile != mask.HIPAASafeHarbor || obj.ProfileVersion == "" {
		t.Errorf("object %+v", obj)
	}
	tests := []struct{ seg, field, want string }{
		{"MSH", "3", "ADT"},
		{"MSH", "7", "2024"},
		{"MSH", "9", "ADT^A01^ADT_A01"},
		{"MSH", "10", "MSG00001"},
		{"EVN", "2", "2024"},
		{"EVN", "5", "411^NURSE^ANNE"},
		{"PID", "1", "1"},
		{"PID", "3", mrn + "^^M10^GH^MR~" + k.Token(pseudonym.KindPatientID, "SSN-ALT") + "^^^SSA^SS"},
		{"PID", "5", k.Token(pseudonym.KindName, "CANARYWHISTLE^ZELDA^Q")},
		{"PID", "7", "1934"}, // born 1928: 96 in 2024, grouped at 90
		{"PID", "8", "F"},
		{"PID", "11", "^^^PA^152^US^H^^"},
		{"PID", "12", ""},
		{"PID", "13", ""},
		{"PID", "19", ""},
		{"PID", "20", ""},
		{"PD1", "4", "2725^McCoy^Leonard"},
		{"NK1", "2", ""},
		{"NK1", "3", "SPO"},
		{"NK1", "4", ""},
		{"PV1", "7", "9873^HIBBARD^JILLIAN^M."},
		{"PV1", "19", k.Token(pseudonym.KindOther, "V0000042") + "^^^GH^VN"},
		{"PV1", "44", "2024"},
		{"PV1", "45", "2024"},
		{"IN1", "4", "ACME CARE"},
		{"IN1", "9", ""},
		{"IN1", "16", ""},
		{"IN1", "17", "SEL"},
		{"IN1", "18", "1934"},
		{"IN1", "19", "^^^PA^152^US"},
	}
	for _, tt := range tests {
		s := segment(t, out, tt.seg)
		if s == nil {
			t.Errorf("%s missing", tt.seg)
			continue
		}
		n := 0
		for _, c := range tt.field {
			n = n*10 + int(c-'0')
		}
		if got := s.Field(n); got != tt.want {
			t.Errorf("%s-%s = %q, want %q", tt.seg, tt.field, got, tt.want)
		}
	}
	if segment(t, out, "ZNM") != nil {
		t.Error("Z segment crossed")
	}
}

func TestHIPAASafeHarborORU(t *testing.T) {
	c := hipaaCodec(t)
	in, _ := os.ReadFile("testdata/oru_r01.hl7")
	out, obj, err := c.Mask(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, canary := range canaries {
		if bytes.Contains(out, []byte(canary)) {
			t.Errorf("%q crossed", canary)
		}
	}
	if obj.Operation != "ORU^R01" {
		t.Errorf("operation %q", obj.Operation)
	}
	k := testKeyer(t)
	obr := segment(t, out, "OBR")
	if got, want := obr.Field(3), k.Token(pseudonym.KindAccession, "ACC-4471")+"^LAB"; got != want {
		t.Errorf("OBR-3 = %q, want %q", got, want)
	}
	if got := obr.Field(7); got != "2024" {
		t.Errorf("OBR-7 = %q", got)
	}
	obx := segment(t, out, "OBX")
	if obx.Field(5) != "182" || obx.Field(14) != "2024" {
		t.Errorf("OBX-5 %q OBX-14 %q", obx.Field(5), obx.Field(14))
	}
}

func customCodec(tb testing.TB, rules string) *Codec {
	p, err := mask.ParseProfile("test", []byte(`{"hl7": [`+rules+`]}`))
	if err != nil {
		tb.Fatal(err)
	}
	c, err := New(p, mask.Env{Keyer: testKeyer(tb)}, Config{})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func TestRules(t *testing.T) {
	k := testKeyer(t)
	const msg = "MSH|^~\\&|A|B|C|D|20240101120000||ADT^A08|1|P|2.5\r" +
		"PID|1||ID1^^^AUTH^MR~ID2^^^AUTH2^PI||Doe^John^M||19700215|M|||1 Road^^Town^ST^12345\r" +
		"NK1|1|Roe^Jane|WIFE\r" +
		"ZX1|secret\r"
	tests := []struct {
		name, rules, seg string
		field            int
		want             string
	}{
		{"no rule", ``, "PID", 5, "Doe^John^M"},
		{"empty field", `{"field":"PID-5","action":"empty"}`, "PID", 5, ""},
		{"remove field empties it", `{"field":"PID-5","action":"remove"}`, "PID", 5, ""},
		{"component", `{"field":"PID-5.2","action":"empty"}`, "PID", 5, "Doe^^M"},
		{"replace", `{"field":"PID-5","action":"replace","value":"ANON^A|B"}`, "PID", 5, `ANON\S\A\F\B`},
		{"replace default", `{"field":"PID-5.1","action":"replace"}`, "PID", 5, "REDACTED^John^M"},
		{"every repetition", `{"field":"PID-3.1","action":"empty"}`, "PID", 3, "^^^AUTH^MR~^^^AUTH2^PI"},
		{"one repetition", `{"field":"PID-3[2].1","action":"empty"}`, "PID", 3, "ID1^^^AUTH^MR~^^^AUTH2^PI"},
		{"pseudonym", `{"field":"PID-3.1","action":"pseudonym","value":"patient-id"}`, "PID", 3,
			k.Token("patient-id", "ID1") + "^^^AUTH^MR~" + k.Token("patient-id", "ID2") + "^^^AUTH2^PI"},
		{"name pseudonym", `{"field":"PID-5","action":"pseudonym","value":"name"}`, "PID", 5, k.Token("name", "DOE^JOHN^M")},
		{"date shift", `{"field":"PID-7","action":"dateshift"}`, "PID", 7, mustShift(t, k, "ID1", "19700215")},
		{"generalize", `{"field":"PID-11.5","action":"generalize"}`, "PID", 11, "1 Road^^Town^ST^123"},
		{"uid", `{"field":"PID-3[1].1","action":"uid"}`, "PID", 3, k.UID("ID1") + "^^^AUTH^MR~ID2^^^AUTH2^PI"},
		{"wildcard and keep", `{"field":"PID-*","action":"empty"},{"field":"PID-8","action":"keep"}`, "PID", 8, "M"},
		{"wildcard empties", `{"field":"PID-*","action":"empty"},{"field":"PID-8","action":"keep"}`, "PID", 7, ""},
		{"specific beats later wildcard", `{"field":"PID-8","action":"keep"},{"field":"PID-*","action":"empty"}`, "PID", 8, "M"},
		{"deeper keep inside empty", `{"field":"PID-11","action":"empty"},{"field":"PID-11.4","action":"keep"}`, "PID", 11, "^^^ST^"},
		{"later wins at equal depth", `{"field":"PID-5","action":"empty"},{"field":"PID-5","action":"keep"}`, "PID", 5, "Doe^John^M"},
		{"segment rule", `{"field":"NK1","action":"empty"}`, "NK1", 2, ""},
		{"msh wildcard spares delimiters", `{"field":"MSH-*","action":"empty"}`, "MSH", 2, "^~\\&"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := customCodec(t, tt.rules)
			out, _, err := c.Mask([]byte(msg))
			if err != nil {
				t.Fatal(err)
			}
			s := segment(t, out, tt.seg)
			if s == nil {
				t.Fatalf("%s missing", tt.seg)
			}
			if got := s.Field(tt.field); got != tt.want {
				t.Errorf("%s-%d = %q, want %q", tt.seg, tt.field, got, tt.want)
			}
		})
	}
	t.Run("remove segments", func(t *testing.T) {
		c := customCodec(t, `{"field":"NK1","action":"remove"},{"field":"Z*","action":"remove"},{"field":"MSH","action":"remove"}`)
		out, _, err := c.Mask([]byte(msg))
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.Split(msg, "\r")[0] + "\r" + strings.Split(msg, "\r")[1] + "\r"; string(out) != want {
			t.Errorf("got %q, want %q", out, want)
		}
	})
}

func mustShift(tb testing.TB, k *pseudonym.Keyer, key, date string) string {
	s, err := k.ShiftDate(key, date)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestOwnDelimiters(t *testing.T) {
	c := customCodec(t, `{"field":"PID-5.1","action":"replace","value":"X#Y"},{"field":"PID-3[2]","action":"empty"}`)
	out, _, err := c.Mask([]byte("MSH#!@$%#A#B#C#D#2024##ADT!A01#1#P#2.5\rPID###A!1@B!2##Doe!John"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "MSH#!@$%#A#B#C#D#2024##ADT!A01#1#P#2.5\rPID###A!1@##X$F$Y!John"; string(out) != want {
		t.Errorf("got  %q\nwant %q", out, want)
	}
}

func TestNewNeedsKeyer(t *testing.T) {
	p, _ := mask.Builtin(mask.HIPAASafeHarbor)
	if _, err := New(p, mask.Env{}, Config{}); err == nil {
		t.Error("a pseudonymizing profile without a keyer was accepted")
	}
	p, _ = mask.ParseProfile("plain", []byte(`{"hl7":[{"field":"PID-5","action":"empty"}]}`))
	if _, err := New(p, mask.Env{}, Config{}); err != nil {
		t.Errorf("a profile that needs no keyer: %v", err)
	}
	var back bytes.Buffer
	f := NewFilter(&mask.Profile{Name: "bad", HL7: []mask.Rule{{Field: "PID-5", Action: mask.Pseudonym}}}, mask.Env{})
	err := f(&bytes.Buffer{}, strings.NewReader("\x0bMSH|^~\\&|A|B|C|D|2024||ADT^A01|X1|P|2.5\r\x1c\r"), &back, nil)
	if !errors.Is(err, mask.ErrUnmaskable) {
		t.Errorf("err = %v", err)
	}
	if code, id, ok := ReadACK(firstFrame(t, back.Bytes())); !ok || code != "AR" || id != "X1" {
		t.Errorf("answer %q: %q %q %v", back.String(), code, id, ok)
	}
}

func firstFrame(tb testing.TB, b []byte) []byte {
	f, err := NewReader(bytes.NewReader(b), 0).ReadFrame()
	if err != nil {
		tb.Fatalf("no frame in %q: %v", b, err)
	}
	return f
}

func FuzzMask(f *testing.F) {
	for _, m := range sampleMessages(f) {
		f.Add(m)
	}
	c := hipaaCodec(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		out, _, err := c.Mask(in)
		if err != nil {
			return
		}
		m, err := Parse(out)
		if err != nil {
			t.Fatalf("masked message does not parse: %v\n%q", err, out)
		}
		for i := range m.Segments {
			seg := &m.Segments[i]
			switch seg.Name {
			case "PID":
				for _, f := range []int{6, 9, 12, 13, 14, 19, 20, 21, 23} {
					if v := seg.Field(f); v != "" {
						t.Fatalf("PID-%d crossed: %q", f, v)
					}
				}
				for _, v := range strings.Split(seg.Field(5), string(m.Delims.Repetition)) {
					if v != "" && !isToken(v) {
						t.Fatalf("PID-5 crossed: %q", v)
					}
				}
			case "NK1":
				for _, f := range []int{2, 4, 5, 6, 16, 30, 31, 32, 33, 37} {
					if v := seg.Field(f); v != "" {
						t.Fatalf("NK1-%d crossed: %q", f, v)
					}
				}
			}
			if strings.HasPrefix(seg.Name, "Z") {
				t.Fatalf("segment %s crossed", seg.Name)
			}
		}
		if again, _, err := c.Mask(in); err != nil || !bytes.Equal(again, out) {
			t.Fatalf("masking is not deterministic")
		}
	})
}

func isToken(s string) bool {
	if len(s) != 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= 'A' && s[i] <= 'Z' || s[i] >= '2' && s[i] <= '7') {
			return false
		}
	}
	return true
}

func BenchmarkMaskADT(b *testing.B) {
	c := hipaaCodec(b)
	in, err := os.ReadFile("testdata/adt_a01.hl7")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := c.Mask(in); err != nil {
			b.Fatal(err)
		}
	}
}
