package hl7

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// nodeModules is where testdata/node's peers and samples are installed.
const nodeModules = "testdata/node/node_modules"

// sampleMessages returns our own sample messages and, when the npm
// packages are installed, theirs: one message per MSH.
func sampleMessages(tb testing.TB) [][]byte {
	files, _ := filepath.Glob("testdata/*.hl7")
	for _, g := range []string{"hl7-standard/tests/data/*.hl7", "simple-hl7/test/samples/*", "hl7/test/fixtures/*.txt"} {
		more, _ := filepath.Glob(filepath.Join(nodeModules, g))
		files = append(files, more...)
	}
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, splitMessages(b)...)
	}
	return out
}

// splitMessages cuts a file into messages at each MSH, as mllp_send
// --loose does, keeping line ends as they are.
func splitMessages(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := bytes.Index(b, []byte("MSH"))
		if i < 0 {
			break
		}
		b = b[i:]
		j := bytes.Index(b[3:], []byte("\nMSH"))
		if k := bytes.Index(b[3:], []byte("\rMSH")); k >= 0 && (j < 0 || k < j) {
			j = k
		}
		if j < 0 {
			out = append(out, b)
			break
		}
		out = append(out, b[:j+4])
		b = b[j+4:]
	}
	return out
}

func TestParseRoundTrip(t *testing.T) {
	msgs := sampleMessages(t)
	if len(msgs) < 2 {
		t.Fatalf("%d sample messages", len(msgs))
	}
	parsed := 0
	for i, b := range msgs {
		m, err := Parse(b)
		if err != nil {
			continue // prose in hl7's samples.txt
		}
		parsed++
		if got := m.Bytes(); !bytes.Equal(got, b) {
			t.Errorf("message %d does not round-trip:\n%q\n%q", i, b, got)
		}
	}
	if parsed < 2 {
		t.Errorf("only %d of %d samples parse", parsed, len(msgs))
	}
}

func TestParse(t *testing.T) {
	m, err := Parse([]byte("MSH#!@$%#APP#FAC#####ORU!R01#C1#P#2.5\rPID###A$1!B$2@C$3%x##NAME\r\nNTE\n\rOBX#1"))
	if err != nil {
		t.Fatal(err)
	}
	want := Delimiters{Field: '#', Component: '!', Repetition: '@', Escape: '$', Subcomponent: '%'}
	if m.Delims != want {
		t.Errorf("delimiters %+v, want %+v", m.Delims, want)
	}
	if m.Type() != "ORU^R01" || m.ControlID() != "C1" {
		t.Errorf("type %q control ID %q", m.Type(), m.ControlID())
	}
	var names, ends []string
	for _, s := range m.Segments {
		names, ends = append(names, s.Name), append(ends, s.End)
	}
	if strings.Join(names, ",") != "MSH,PID,NTE,,OBX" || strings.Join(ends, ",") != "\r,\r\n,\n,\r," {
		t.Errorf("segments %q ends %q", names, ends)
	}
	if got := m.Segments[1].Field(3); got != "A$1!B$2@C$3%x" {
		t.Errorf("PID-3 = %q", got)
	}
	if got := m.Header().Field(1); got != "#" {
		t.Errorf("MSH-1 = %q", got)
	}
	if got := m.Header().Field(2); got != "!@$%" {
		t.Errorf("MSH-2 = %q", got)
	}
	if got := m.Header().Field(3); got != "APP" {
		t.Errorf("MSH-3 = %q", got)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "header: does not start with MSH"},
		{"not hl7", "Hello, world\r", "header: does not start with MSH"},
		{"alnum separator", "MSHA^~\\&A\r", "field separator"},
		{"no encoding characters", "MSH||\r", "encoding characters"},
		{"repeated encoding character", "MSH|^^\\&|\r", "encoding characters"},
		{"prose line", "MSH|^~\\&|A\rPID|1\rSample lines example 2:\r", "segment 3: does not start with a segment name"},
		{"lower case", "MSH|^~\\&|A\rpid|1\r", "segment 2:"},
		{"no separator after name", "MSH|^~\\&|A\rPIDX|1\r", "segment 2: segment name is not followed"},
		{"batch", "MSH|^~\\&|A\rMSH|^~\\&|B\r", "segment 2: a second MSH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if !errors.Is(err, ErrNotHL7) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrNotHL7 with %q", err, tt.want)
			}
		})
	}
}

func TestEscape(t *testing.T) {
	d := DefaultDelimiters
	for _, s := range []string{"", "plain", `a|b^c~d\e&f`, "line\rend\n", `\F\ literal`} {
		if got := d.DecodeValue(d.EncodeValue(s)); got != s {
			t.Errorf("%q -> %q -> %q", s, d.EncodeValue(s), got)
		}
	}
	tests := map[string]string{
		`A\F\B`:       "A|B",
		`\S\\T\\R\`:   "^&~",
		`\E\`:         `\`,
		`\X0D0A\`:     "\r\n",
		`\H\bold\N\`:  `\H\bold\N\`,
		`open\`:       `open\`,
		`\Xzz\`:       `\Xzz\`,
		`\.br\ break`: `\.br\ break`,
	}
	for in, want := range tests {
		if got := d.DecodeValue(in); got != want {
			t.Errorf("DecodeValue(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseMessage(f *testing.F) {
	for _, m := range sampleMessages(f) {
		f.Add(m)
	}
	f.Add([]byte("MSH#!@$%#A\rPID###A$1!B$2@C$3%x"))
	f.Add([]byte("MSH|^~\\&#|A\r\n\r\nPID|1"))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := Parse(in)
		if err != nil {
			if !errors.Is(err, ErrNotHL7) {
				t.Fatalf("error does not wrap ErrNotHL7: %v", err)
			}
			return
		}
		out := m.Bytes()
		if !bytes.Equal(out, in) {
			t.Fatalf("round trip:\n%q\n%q", in, out)
		}
		if IsACK(in) {
			ReadACK(in)
		}
	})
}
