package dicom

import (
	"bufio"
	"bytes"
	"io"
	"testing"

	"github.com/medgate/medgate/proxy/mask"
)

// benchStream is an association carrying one C-STORE of a 64 MiB
// object in 16 KiB PDUs, as dcmtk sends it.
func benchStream(b *testing.B) []byte {
	in := readPart10(b, samplePath("CT_small.dcm"))
	const size = 64 << 20
	ds := in.dataset
	// Replace the sample's pixel data with a large one.
	x := &run{d: &decoder{r: bufio.NewReader(bytes.NewReader(ds))}}
	cut := 0
	for {
		start := x.d.pos
		h, err := x.d.header(explicitLE)
		if err != nil || h.tag >= tagPixelData {
			cut = int(start)
			break
		}
		k, inner, _ := classify(explicitLE, h)
		if err := x.skip(explicitLE, h, k, inner, 0); err != nil {
			b.Fatal(err)
		}
	}
	ds = explicitLE.appendHeader(append([]byte(nil), ds[:cut]...), tagPixelData, "OW", size)
	ds = append(ds, make([]byte, size)...)
	cmd := buildCommand(CStoreRQ, 1, ctStorage, "1.2.3", true)
	return encodeMessage(1, cmd, ds, pdvPlan{frag: 16384 - 6, perPDU: 1, max: 16384})
}

func benchAssociation(b *testing.B) *Association {
	a := NewAssociation()
	syn := []string{ExplicitVRLittleEndian}
	rq, _ := ReadPDU(bytes.NewReader(buildAssociate(TypeAssociateRQ, ctStorage, syn, 16384, 0)), 0)
	ac, _ := ReadPDU(bytes.NewReader(buildAssociate(TypeAssociateAC, ctStorage, syn, 16384, 0)), 0)
	if err := a.record(0, rq); err != nil {
		b.Fatal(err)
	}
	if err := a.record(1, ac); err != nil {
		b.Fatal(err)
	}
	return a
}

func benchmarkFilter(b *testing.B, masked bool) {
	stream := benchStream(b)
	var m *Masker
	if masked {
		m = basicMasker(b, mask.DICOMOptions{})
	}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		toPeer, _ := benchAssociation(b).Filters(m, nil)
		if err := toPeer(io.Discard, bytes.NewReader(stream), io.Discard, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFilterMasked is the masked direction's own cost per byte of a
// large C-STORE; BenchmarkFilterPassThrough the unmasked direction's.
func BenchmarkFilterMasked(b *testing.B)      { benchmarkFilter(b, true) }
func BenchmarkFilterPassThrough(b *testing.B) { benchmarkFilter(b, false) }

// BenchmarkNewMasker is the cost of compiling the basic profile, which
// Codec pays once per connection.
func BenchmarkNewMasker(b *testing.B) {
	p, _ := mask.Builtin(mask.DICOMBasic)
	env := mask.Env{Keyer: testKeyer(b)}
	for b.Loop() {
		if _, err := NewMasker(p, env); err != nil {
			b.Fatal(err)
		}
	}
}
