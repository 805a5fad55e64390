package dicom

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/medgate/medgate/proxy/mask"
)

var syntaxes = []syntax{implicitLE, explicitLE, explicitBE}

func seedDataSets(f *testing.F) {
	for _, s := range []struct {
		name string
		mode uint8
	}{
		{"CT_small.dcm", 1}, {"MR_small_bigendian.dcm", 2}, {"MR_small_implicit.dcm", 0}, {"rtplan.dcm", 0},
		{"nested_priv_SQ.dcm", 1}, {"UN_sequence.dcm", 1}, {"test-SR.dcm", 1}, {"MR_small_RLE.dcm", 1},
		{"waveform_ecg.dcm", 1}, {"../charset_files/chrSQEncoding.dcm", 1},
	} {
		b, err := os.ReadFile(samplePath(s.name))
		if err != nil {
			continue
		}
		p, err := splitPart10(b)
		if err != nil {
			continue
		}
		ds := p.dataset
		if len(ds) > 3<<10 {
			ds = ds[:3<<10]
		}
		f.Add(ds, s.mode)
		f.Add(ds, s.mode|4|8)
	}
}

// FuzzElementReader masks arbitrary data sets in each syntax: no panic,
// every refusal is an unmaskable error, and what the masker writes
// parses again.
func FuzzElementReader(f *testing.F) {
	seedDataSets(f)
	m := basicMasker(f, mask.DICOMOptions{})
	mo := basicMasker(f, mask.DICOMOptions{RetainLongitudinalModifiedDates: true, RetainPatientCharacteristics: true,
		RetainDeviceIdentity: true, CleanDescriptors: true})
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		s := syntaxes[int(mode)%3]
		mm := m
		if mode&4 != 0 {
			mm = mo
		}
		var out bytes.Buffer
		obj := mm.object("C-STORE-RQ")
		err := mm.maskDataSet(&out, bufio.NewReader(bytes.NewReader(data)), s, mode&16 != 0, mode&8 != 0, &obj)
		if err != nil {
			if !errors.Is(err, mask.ErrUnmaskable) {
				t.Fatalf("error %v does not wrap ErrUnmaskable", err)
			}
			return
		}
		if _, err := parseTree(out.Bytes(), s); err != nil {
			t.Fatalf("masked output does not parse: %v", err)
		}
	})
}

// FuzzPDUReader reads arbitrary PDUs, and runs arbitrary input through
// the masked filter of an established association: no panic, every
// refusal is an unmaskable error, and every PDU the filter writes is well
// formed and within the receiver's maximum.
func FuzzPDUReader(f *testing.F) {
	in, err := os.ReadFile(samplePath("CT_small.dcm"))
	if err == nil {
		p, _ := splitPart10(in)
		cmd := buildCommand(CStoreRQ, 1, ctStorage, "1.2.3", true)
		f.Add(encodeMessage(1, cmd, p.dataset[:4000], pdvPlan{frag: 1000, perPDU: 2, together: true}))
		f.Add(encodeMessage(1, cmd, p.dataset[:600], pdvPlan{frag: 7, perPDU: 5}))
	}
	f.Add(buildAssociate(TypeAssociateRQ, ctStorage, []string{ExplicitVRLittleEndian}, 16384, 0))
	f.Add(append((&PDU{Type: TypeReleaseRQ, Data: make([]byte, 4)}).Bytes(), Abort(0)...))
	f.Add(encodeMessage(3, buildCommand(CEchoRQ, 1, "1.2.840.10008.1.1", "", false), nil, pdvPlan{frag: 100, perPDU: 1}))
	m := basicMasker(f, mask.DICOMOptions{})
	const peerMax = 2048
	f.Fuzz(func(t *testing.T, data []byte) {
		if p, err := ReadPDU(bytes.NewReader(data), 0); err == nil {
			switch p.Type {
			case TypeAssociateRQ, TypeAssociateAC:
				_, _ = ParseAssociate(p.Type, p.Data)
			case TypePData:
				_, _ = ParsePDVs(p.Data)
			}
		}
		a := NewAssociation()
		syn := []string{ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, "1.2.840.10008.1.2.4.50"}
		rq, _ := ReadPDU(bytes.NewReader(buildAssociate(TypeAssociateRQ, ctStorage, syn, 0, 0)), 0)
		ac, _ := ReadPDU(bytes.NewReader(buildAssociate(TypeAssociateAC, ctStorage, syn, peerMax, 0)), 0)
		if err := a.record(0, rq); err != nil {
			t.Fatal(err)
		}
		if err := a.record(1, ac); err != nil {
			t.Fatal(err)
		}
		toPeer, _ := a.Filters(m, nil)
		var dst, back bytes.Buffer
		err := toPeer(&dst, bytes.NewReader(data), &back, nil)
		if err != nil && !errors.Is(err, mask.ErrUnmaskable) {
			t.Fatalf("error %v does not wrap ErrUnmaskable", err)
		}
		r := bytes.NewReader(dst.Bytes())
		for {
			p, err := ReadPDU(r, 0)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("filter wrote a bad PDU: %v", err)
			}
			if p.Type == TypePData {
				if len(p.Data) > peerMax {
					t.Fatalf("filter wrote a P-DATA-TF of %d bytes", len(p.Data))
				}
				if _, err := ParsePDVs(p.Data); err != nil {
					t.Fatalf("filter wrote bad PDVs: %v", err)
				}
			}
		}
	})
}
