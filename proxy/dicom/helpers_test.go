package dicom

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/medgate/medgate/crypto/pseudonym"
	"github.com/medgate/medgate/proxy/mask"
)

const testFiles = "/usr/lib/python3/dist-packages/pydicom/data/test_files"

func testKeyer(t testing.TB) *pseudonym.Keyer {
	t.Helper()
	k, err := pseudonym.New(bytes.Repeat([]byte{7}, pseudonym.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func basicMasker(t testing.TB, opts mask.DICOMOptions, extra ...mask.Rule) *Masker {
	t.Helper()
	p, ok := mask.Builtin(mask.DICOMBasic)
	if !ok {
		t.Fatal("no dicom-basic profile")
	}
	p.DICOMOptions = opts
	p.DICOM = extra
	m, err := NewMasker(p, mask.Env{Keyer: testKeyer(t)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// part10 is a DICOM file split into its transfer syntax and data set.
type part10 struct {
	ts      string
	meta    []byte
	dataset []byte
}

func readPart10(t testing.TB, path string) part10 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("sample file: %v", err)
	}
	f, err := splitPart10(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f
}

func splitPart10(b []byte) (part10, error) {
	if len(b) < 132 || string(b[128:132]) != "DICM" {
		return part10{}, errors.New("no DICM prefix")
	}
	var f part10
	p := 132
	for p+8 <= len(b) {
		g := binary.LittleEndian.Uint16(b[p:])
		if g != 2 {
			break
		}
		tag := uint32(g)<<16 | uint32(binary.LittleEndian.Uint16(b[p+2:]))
		vr := string(b[p+4 : p+6])
		var n, hl int
		if longVR(vr) {
			n, hl = int(binary.LittleEndian.Uint32(b[p+8:])), 12
		} else {
			n, hl = int(binary.LittleEndian.Uint16(b[p+6:])), 8
		}
		if tag == 0x00020010 {
			f.ts = trimValue(b[p+hl : p+hl+n])
		}
		p += hl + n
	}
	f.meta, f.dataset = b[:p], b[p:]
	return f, nil
}

// writePart10 writes a data set as a file dcmtk reads.
func writePart10(path, ts, sopClass, sopInstance string, dataset []byte) error {
	var meta []byte
	el := func(tag uint32, vr string, v []byte) {
		meta = explicitLE.appendHeader(meta, tag, vr, uint32(len(v)))
		meta = append(meta, v...)
	}
	el(0x00020001, "OB", []byte{0, 1})
	el(0x00020002, "UI", pad("UI", []byte(sopClass)))
	el(0x00020003, "UI", pad("UI", []byte(sopInstance)))
	el(0x00020010, "UI", pad("UI", []byte(ts)))
	el(0x00020012, "UI", pad("UI", []byte("1.2.3.4")))
	var b []byte
	b = append(b, make([]byte, 128)...)
	b = append(b, "DICM"...)
	b = explicitLE.appendHeader(b, 0x00020000, "UL", 4)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(meta)))
	b = append(b, meta...)
	b = append(b, dataset...)
	return os.WriteFile(path, b, 0o644)
}

// node is an element of a parsed data set.
type node struct {
	tag    uint32
	vr     string
	value  []byte
	seq    bool
	items  [][]*node
	encaps bool
	frags  [][]byte
}

func (n *node) String() string { return tagString(n.tag) }

func parseTree(b []byte, s syntax) ([]*node, error) {
	d := &decoder{r: bufio.NewReader(bytes.NewReader(b))}
	return treeDataset(d, s, -1, true)
}

func treeDataset(d *decoder, s syntax, end int64, top bool) ([]*node, error) {
	var out []*node
	for {
		if end >= 0 && d.pos >= end {
			return out, nil
		}
		h, err := d.header(s)
		if err == io.EOF && top {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if h.tag == tagItemDelim {
			return out, nil
		}
		k, inner, err := classify(s, h)
		if err != nil {
			return nil, err
		}
		n := &node{tag: h.tag, vr: semanticVR(s, h)}
		switch k {
		case kindSequence:
			n.seq = true
			send := int64(-1)
			if h.length != undefinedLength {
				send = d.pos + int64(h.length)
			}
			for send < 0 || d.pos < send {
				ih, err := d.header(inner)
				if err != nil {
					return nil, err
				}
				if ih.tag == tagSeqDelim {
					break
				}
				iend := int64(-1)
				if ih.length != undefinedLength {
					iend = d.pos + int64(ih.length)
				}
				item, err := treeDataset(d, inner, iend, false)
				if err != nil {
					return nil, err
				}
				n.items = append(n.items, item)
			}
		case kindEncapsulated:
			n.encaps = true
			for {
				ih, err := d.header(s)
				if err != nil {
					return nil, err
				}
				if ih.tag == tagSeqDelim {
					break
				}
				v, err := d.value(header{tag: ih.tag, length: min(ih.length, maxHeldValue)})
				if err != nil {
					return nil, err
				}
				n.frags = append(n.frags, v)
			}
		default:
			v := make([]byte, h.length)
			if err := d.full(v); err != nil {
				return nil, err
			}
			n.value = v
		}
		out = append(out, n)
	}
}

func find(ds []*node, tag uint32) *node {
	for _, n := range ds {
		if n.tag == tag {
			return n
		}
	}
	return nil
}

// walk calls f for every element, with its path ("(0008,1110)[0]/(0020,000D)").
func walk(ds []*node, path string, f func(path string, n *node)) {
	for _, n := range ds {
		p := path + tagString(n.tag)
		f(p, n)
		for i, it := range n.items {
			walk(it, fmt.Sprintf("%s[%d]/", p, i), f)
		}
	}
}

func index(ds []*node) map[string]*node {
	m := map[string]*node{}
	walk(ds, "", func(p string, n *node) { m[p] = n })
	return m
}

// sampleFiles are the pydicom files the tests send, with the storescu
// option that proposes their transfer syntax.
var sampleFiles = []struct {
	name, propose string
	store         bool // storescu can send it (it has SOP class and instance UIDs)
}{
	{"CT_small.dcm", "-xe", true},
	{"MR_small.dcm", "-xe", true},
	{"MR_small_bigendian.dcm", "-xb", true},
	{"MR_small_implicit.dcm", "-xi", true},
	{"MR_small_RLE.dcm", "-xr", true},
	{"JPEG-lossy.dcm", "-xx", true},
	{"MR_small_jp2klossless.dcm", "-xv", true},
	{"MR_small_jpeg_ls_lossless.dcm", "-xt", true},
	{"rtdose.dcm", "-xi", true},
	{"waveform_ecg.dcm", "-xe", true},
	{"rtplan.dcm", "-xi", true},
	{"../charset_files/chrH31.dcm", "-xe", true},
	{"../charset_files/chrRuss.dcm", "-xe", true},
	{"../charset_files/chrX1.dcm", "-xe", true},
	{"../charset_files/chrGerm.dcm", "-xe", true},
	{"../charset_files/chrSQEncoding.dcm", "", false},
	{"nested_priv_SQ.dcm", "", false},
	{"priv_SQ.dcm", "", false},
	{"UN_sequence.dcm", "", false},
	{"reportsi.dcm", "", false},
	{"test-SR.dcm", "", false},
}

func samplePath(name string) string { return filepath.Join(testFiles, name) }

// checkMasked compares an object before and after masking with m: every
// rule of the basic profile was applied wherever its attribute occurs,
// the pixel data is byte-identical and no private attribute is left.
func checkMasked(t *testing.T, m *Masker, in, out []byte, s syntax, stored bool) {
	t.Helper()
	checkMaskedAs(t, m, in, s, out, s, stored, true)
}

// checkMaskedAs compares an object encoded in sin with its masked form
// encoded in sout, which another program may have re-encoded: unless
// exact, kept values need only be present.
func checkMaskedAs(t *testing.T, m *Masker, in []byte, sin syntax, out []byte, sout syntax, stored, exact bool) {
	t.Helper()
	before, err := parseTree(in, sin)
	if err != nil {
		t.Fatalf("parse input: %v", err)
	}
	after, err := parseTree(out, sout)
	if err != nil {
		t.Fatalf("parse masked output: %v", err)
	}
	k := m.keyer
	bi, ai := index(before), index(after)
	for p, n := range bi {
		if strings.Contains(p, "[") && !strings.HasPrefix(p, "(") {
			continue
		}
		stack, parentKept := pathStack(m, p, ai)
		if !parentKept {
			continue
		}
		o := ai[p]
		rl := m.ruleFor(n.tag, n.vr, stack)
		if n.tag&0xFFFF == 0 {
			if o != nil {
				t.Errorf("%s: group length kept", p)
			}
			continue
		}
		if stored && n.tag >= tagIdentityRem && n.tag <= tagDeidCodeSeq && len(stack) == 0 {
			continue
		}
		if (n.tag>>16)%2 == 1 {
			if o != nil {
				t.Errorf("%s: private attribute kept", p)
			}
			continue
		}
		switch rl.act {
		case actRemove:
			if o != nil {
				t.Errorf("%s: rule remove, still present", p)
			}
		case actEmpty:
			if o == nil || len(o.value) != 0 || len(o.items) != 0 {
				t.Errorf("%s: rule empty, got %v", p, o)
			}
		case actReplace:
			if o == nil || (len(o.value) == 0 && !o.seq) {
				t.Errorf("%s: rule replace, got %v", p, o)
			} else if !o.seq && len(n.value) > 0 && bytes.Equal(o.value, n.value) && trimValue(n.value) != trimValue(dummy(n.vr, "")) {
				t.Errorf("%s: rule replace, value unchanged", p)
			}
		case actUID:
			if n.seq {
				continue
			}
			want := k.UID(trimValue(n.value))
			if trimValue(n.value) == "" {
				want = ""
			}
			if o == nil || trimValue(o.value) != want {
				t.Errorf("%s: rule uid, not remapped", p)
			}
		case actPseudonym:
			want := k.Token(rl.value, trimValue(n.value))
			if trimValue(n.value) == "" {
				want = ""
			}
			if o == nil || trimValue(o.value) != want {
				t.Errorf("%s: rule pseudonym, not the token", p)
			}
		case actKeep:
			if o == nil {
				t.Errorf("%s: rule keep, removed", p)
			} else if !exact {
				continue
			} else if !n.seq && !bytes.Equal(o.value, n.value) {
				t.Errorf("%s: rule keep, value changed", p)
			} else if n.encaps && !equalFrags(n.frags, o.frags) {
				t.Errorf("%s: encapsulated fragments changed", p)
			}
		}
	}
	if stored && m.deidentify {
		if v := find(after, tagIdentityRem); v == nil || trimValue(v.value) != "YES" {
			t.Errorf("Patient Identity Removed missing or not YES")
		}
		cs := find(after, tagDeidCodeSeq)
		if cs == nil || len(cs.items) == 0 || trimValue(find(cs.items[0], tagCodeValue).value) != "113100" {
			t.Errorf("De-identification Method Code Sequence missing or without 113100")
		}
	}
}

// pathStack returns the sequence tags around the element at path p, and
// whether every enclosing sequence was kept with its items in the output
// (so the element's own fate can be checked).
func pathStack(m *Masker, p string, after map[string]*node) ([]uint32, bool) {
	parts := strings.Split(p, "/")
	var stack []uint32
	prefix := ""
	for _, part := range parts[:len(parts)-1] {
		i := strings.Index(part, "[")
		var g, e uint32
		fmt.Sscanf(part[:i], "(%04X,%04X)", &g, &e)
		switch m.ruleFor(g<<16|e, "SQ", stack).act {
		case actRemove, actEmpty, actReplace:
			return stack, false
		}
		stack = append(stack, g<<16|e)
		seq := after[prefix+part[:i]]
		var idx int
		fmt.Sscanf(part[i:], "[%d]", &idx)
		if seq == nil || idx >= len(seq.items) {
			return stack, false
		}
		prefix += part + "/"
	}
	return stack, true
}

func equalFrags(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
