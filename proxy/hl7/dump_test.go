package hl7

import (
	"os"
	"strings"
	"testing"

	"github.com/medgate/medgate/crypto/pseudonym"
	"github.com/medgate/medgate/proxy/mask"
)

func TestDump(t *testing.T) {
	k, _ := pseudonym.New(make([]byte, 32))
	p, _ := mask.Builtin("hipaa-safe-harbor")
	c, err := New(p, mask.Env{Keyer: k}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"testdata/adt_a01.hl7", "testdata/oru_r01.hl7"} {
		b, _ := os.ReadFile(f)
		m, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range m.Segments {
			if s.Name == "PV1" {
				t.Logf("PV1-19=%s PV1-44=%s", s.Field(19), s.Field(44))
			}
		}
		out, obj, err := c.Mask(b)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%+v\n%s", obj, strings.ReplaceAll(string(out), "\r", "\n"))
	}
}
