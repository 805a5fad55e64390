package dicom

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/medgate/medgate/proxy/mask"
)

const ctStorage = "1.2.840.10008.5.1.4.1.1.2"

// TestFilterRefragments sends one object cut every which way and checks
// what the peer receives: PDUs within its maximum, the command's UID
// remapped with its group length right, and the data set exactly what the
// masker makes of it, whatever the input's fragmentation.
func TestFilterRefragments(t *testing.T) {
	m := basicMasker(t, mask.DICOMOptions{})
	in := readPart10(t, samplePath("CT_small.dcm"))
	want, _, err := maskBytes(t, m, in.dataset, explicitLE, true)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := parseTree(in.dataset, explicitLE)
	uid := trimValue(find(before, tagSOPInstance).value)
	plans := map[string]pdvPlan{
		"one byte PDVs":             {frag: 1, perPDU: 1},
		"odd fragments, many a PDU": {frag: 997, perPDU: 5},
		"command and data together": {frag: 4000, perPDU: 3, together: true},
		"whole":                     {frag: 1 << 20, perPDU: 2, together: true},
	}
	for name, plan := range plans {
		for _, peerMax := range []uint32{0, 1024, 16384} {
			t.Run(fmt.Sprintf("%s max %d", name, peerMax), func(t *testing.T) {
				h := newHarness(t, m, nil)
				h.associate(t, ctStorage, []string{ExplicitVRLittleEndian}, 1<<20, peerMax)
				cmd := buildCommand(CStoreRQ, 7, ctStorage, uid, true)
				plan.max = peerMax
				msg := encodeMessage(1, cmd, in.dataset, plan)
				go func() { h.app.Write(msg) }()
				gotCmd, gotDS, pdus := readMessage(t, h.peerR, peerMax)
				c, err := parseCommand(gotCmd)
				if err != nil {
					t.Fatal(err)
				}
				if v, _ := c.get(tagAffectedSOPInstance); trimValue(v) != m.keyer.UID(uid) {
					t.Errorf("command's SOP instance UID not remapped")
				}
				if gl, _ := c.get(tagCommandGroupLength); int(gl[0])|int(gl[1])<<8 != len(gotCmd)-12 {
					t.Errorf("command group length wrong")
				}
				if !bytes.Equal(gotDS, want) {
					t.Errorf("data set differs from the masker's output")
				}
				if peerMax == 1024 && pdus < len(want)/1018 {
					t.Errorf("%d PDUs for %d bytes within 1024", pdus, len(want))
				}
				o := <-h.objects
				sum := sha256.Sum256(gotDS)
				if o.SHA256 != hex.EncodeToString(sum[:]) || o.InstanceUID != m.keyer.UID(uid) || o.Operation != "C-STORE-RQ" {
					t.Errorf("report %+v", o)
				}
				// The response passes back unchanged; then release.
				rsp := encodeMessage(1, buildCommand(0x8001, 7, ctStorage, m.keyer.UID(uid), false), nil, pdvPlan{frag: 100, perPDU: 1})
				h.peer.Write(rsp)
				if got, _, _ := readMessage(t, h.appR, 1<<20); len(got) == 0 {
					t.Error("no response")
				}
				h.app.Write((&PDU{Type: TypeReleaseRQ, Data: make([]byte, 4)}).Bytes())
				if p := readPDU(t, h.peerR); p.Type != TypeReleaseRQ {
					t.Fatalf("got %v", p.Type)
				}
				h.peer.Write((&PDU{Type: TypeReleaseRP, Data: make([]byte, 4)}).Bytes())
				if p := readPDU(t, h.appR); p.Type != TypeReleaseRP {
					t.Fatalf("got %v", p.Type)
				}
				h.app.CloseWrite()
				h.peer.CloseWrite()
				if err := h.toPeerErr(t); err != nil {
					t.Errorf("toPeer: %v", err)
				}
				if err := <-h.errs; err != nil {
					t.Errorf("fromPeer: %v", err)
				}
				if h.assoc.State() != StateClosed {
					t.Errorf("state %d", h.assoc.State())
				}
			})
		}
	}
}

// TestFilterFailsClosed feeds the masked direction what it must refuse:
// it aborts both ways and forwards no data set fragment.
func TestFilterFailsClosed(t *testing.T) {
	m := basicMasker(t, mask.DICOMOptions{})
	in := readPart10(t, samplePath("CT_small.dcm"))
	cmd := buildCommand(CStoreRQ, 1, ctStorage, "1.2.3", true)
	good := encodeMessage(1, cmd, in.dataset, pdvPlan{frag: 8000, perPDU: 1})
	cases := []struct {
		name    string
		syntax  string
		peerMax uint32
		send    []byte
		reason  Reason
	}{
		{"truncated PDU", ExplicitVRLittleEndian, 0, good[:len(good)-100], ReasonTruncated},
		{"truncated data set", ExplicitVRLittleEndian, 0,
			encodeMessage(1, cmd, in.dataset[:len(in.dataset)/2], pdvPlan{frag: 8000, perPDU: 1}), ReasonTruncated},
		{"PDU over the receiver's maximum", ExplicitVRLittleEndian, 4096, good, ReasonPDUTooLarge},
		{"deflated", DeflatedExplicitVRLE, 0, good, ReasonTransferSyntax},
		{"unknown syntax", "1.2.3.4.5.6", 0, good, ReasonTransferSyntax},
		{"unknown PDU type", ExplicitVRLittleEndian, 0, []byte{9, 0, 0, 0, 0, 4, 0, 0, 0, 0}, ReasonMalformedPDU},
		{"PDV overruns PDU", ExplicitVRLittleEndian, 0, []byte{4, 0, 0, 0, 0, 8, 0, 0, 0, 9, 1, 3, 0, 0}, ReasonMalformedPDV},
		{"data set without command", ExplicitVRLittleEndian, 0,
			(&PDU{Type: TypePData, Data: AppendPDV(nil, 1, false, true, in.dataset[:100])}).Bytes(), ReasonMalformedPDV},
		{"unaccepted context", ExplicitVRLittleEndian, 0, encodeMessage(3, cmd, in.dataset, pdvPlan{frag: 8000, perPDU: 1}), ReasonMalformedPDV},
		{"bad element VR", ExplicitVRLittleEndian, 0,
			encodeMessage(1, cmd, append(explicitLE.appendHeader(nil, 0x00080060, "CS", 2), 'M', 'R', 0x10, 0, 0x10, 0, 'Z', 'Z', 2, 0, 'a', 'b'), pdvPlan{frag: 8000, perPDU: 1}), ReasonMalformedDataSet},
		{"second association", ExplicitVRLittleEndian, 0, buildAssociate(TypeAssociateRQ, ctStorage, []string{ExplicitVRLittleEndian}, 0, 0), ReasonUnexpectedPDU},
	}
	want, _, err := maskBytes(t, m, in.dataset, explicitLE, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, m, nil)
			h.associate(t, ctStorage, []string{c.syntax}, 0, c.peerMax)
			h.app.Write(c.send)
			h.app.CloseWrite()
			// What went before the abort is masked: a prefix of the
			// masked object.
			if got := expectAbort(t, h.peerR); !bytes.HasPrefix(want, got) {
				t.Errorf("%d data set bytes before the abort are not the masked object's", len(got))
			}
			expectAbort(t, h.appR)
			err := h.toPeerErr(t)
			if e := asError(err); e == nil || e.Reason != c.reason || !errors.Is(err, mask.ErrUnmaskable) {
				t.Fatalf("error %v, want reason %s", err, c.reason)
			}
		})
	}
}

func TestFilterBeforeAssociation(t *testing.T) {
	m := basicMasker(t, mask.DICOMOptions{})
	h := newHarness(t, m, nil)
	h.app.Write(encodeMessage(1, buildCommand(CEchoRQ, 1, "1.2.840.10008.1.1", "", false), nil, pdvPlan{frag: 100, perPDU: 1}))
	expectAbort(t, h.peerR)
	if e := asError(h.toPeerErr(t)); e == nil || e.Reason != ReasonUnexpectedPDU {
		t.Fatalf("error %v", e)
	}
}

// TestFilterSenderAborts: an A-ABORT inside a data set goes on to the
// peer and ends the direction without an error.
func TestFilterSenderAborts(t *testing.T) {
	m := basicMasker(t, mask.DICOMOptions{})
	in := readPart10(t, samplePath("CT_small.dcm"))
	h := newHarness(t, m, nil)
	h.associate(t, ctStorage, []string{ExplicitVRLittleEndian}, 0, 0)
	msg := encodeMessage(1, buildCommand(CStoreRQ, 1, ctStorage, "1.2.3", true), in.dataset[:5000], pdvPlan{frag: 1000, perPDU: 1})
	// Drop the last fragment (it carries the last bit) and abort instead.
	msg = msg[:len(msg)-1000-12]
	h.app.Write(msg)
	h.app.Write(Abort(0))
	h.app.CloseWrite()
	for {
		p := readPDU(t, h.peerR)
		if p.Type == TypeAbort {
			if !bytes.Equal(p.Bytes(), Abort(0)) {
				t.Errorf("abort changed")
			}
			break
		}
	}
	if err := h.toPeerErr(t); err != nil {
		t.Fatalf("toPeer: %v", err)
	}
}

// TestFilterCFindResponses masks the answers of an archive: the filter
// from the peer masks, the app's query passes as it is.
func TestFilterCFindResponses(t *testing.T) {
	m := basicMasker(t, mask.DICOMOptions{RetainLongitudinalModifiedDates: true})
	const findModel = "1.2.840.10008.5.1.4.1.2.2.1"
	h := newHarness(t, nil, m)
	h.associate(t, findModel, []string{ImplicitVRLittleEndian}, 0, 0)
	var q []byte
	el := func(b []byte, tag uint32, v string) []byte {
		b = implicitLE.appendHeader(b, tag, "", uint32(len(pad(dictVR(tag), []byte(v)))))
		return append(b, pad(dictVR(tag), []byte(v))...)
	}
	q = el(q, 0x00080020, "")
	q = el(q, 0x00080052, "STUDY")
	q = el(q, tagPatientName, "DOE*")
	q = el(q, tagPatientID, "")
	q = el(q, tagStudyUID, "")
	query := encodeMessage(1, buildCommand(CFindRQ, 5, findModel, "", true), q, pdvPlan{frag: 1000, perPDU: 2, together: true})
	h.app.Write(query)
	if _, ds, _ := readMessage(t, h.peerR, 0); !bytes.Equal(ds, q) {
		t.Fatal("query changed on its way")
	}
	var r []byte
	r = el(r, 0x00080020, "20200115")
	r = el(r, 0x00080052, "STUDY")
	r = el(r, tagPatientName, "DOE^JOHN")
	r = el(r, tagPatientID, "PID-42")
	r = el(r, tagStudyUID, "1.2.3.4.5")
	for i := range 2 {
		h.peer.Write(encodeMessage(1, buildCommand(0x8020, 5, findModel, "", true), r, pdvPlan{frag: 7, perPDU: 3}))
		_, ds, _ := readMessage(t, h.appR, 0)
		after, err := parseTree(ds, implicitLE)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(ds, []byte("JOHN")) || bytes.Contains(ds, []byte("PID-42")) || bytes.Contains(ds, []byte("1.2.3.4.5")) {
			t.Fatalf("response %d carries identifiers", i)
		}
		if got := trimValue(find(after, tagPatientID).value); got != m.keyer.Token("patient-id", "PID-42") {
			t.Errorf("patient ID %q", got)
		}
		want, _ := m.keyer.ShiftDate("PID-42", "20200115")
		if got := trimValue(find(after, 0x00080020).value); got != want {
			t.Errorf("study date %q, want %q", got, want)
		}
		if find(after, tagIdentityRem) != nil {
			t.Errorf("a C-FIND response got de-identification attributes")
		}
		o := <-h.objects
		if o.Operation != "C-FIND-RSP" || o.StudyUID != m.keyer.UID("1.2.3.4.5") || o.PatientPseudonym == "" {
			t.Errorf("report %+v", o)
		}
	}
	h.peer.Write(encodeMessage(1, buildCommand(0x8020, 5, findModel, "", false), nil, pdvPlan{frag: 100, perPDU: 1}))
	readMessage(t, h.appR, 0)
	h.app.Close()
	h.peer.Close()
}

// TestFilterCFindQuery masks a query on its way out: wildcards are not
// pseudonymized, an exact patient ID is.
func TestFilterCFindQuery(t *testing.T) {
	m := basicMasker(t, mask.DICOMOptions{})
	const findModel = "1.2.840.10008.5.1.4.1.2.2.1"
	h := newHarness(t, m, nil)
	h.associate(t, findModel, []string{ExplicitVRLittleEndian}, 0, 0)
	var q []byte
	el := func(tag uint32, vr, v string) {
		q = explicitLE.appendHeader(q, tag, vr, uint32(len(pad(vr, []byte(v)))))
		q = append(q, pad(vr, []byte(v))...)
	}
	el(0x00080052, "CS", "STUDY")
	el(tagPatientName, "PN", "DOE*")
	el(tagPatientID, "LO", "PID*")
	h.app.Write(encodeMessage(1, buildCommand(CFindRQ, 5, findModel, "", true), q, pdvPlan{frag: 1000, perPDU: 2, together: true}))
	_, ds, _ := readMessage(t, h.peerR, 0)
	after, _ := parseTree(ds, explicitLE)
	if v := find(after, tagPatientID); v == nil || len(v.value) != 0 {
		t.Errorf("wildcard patient ID not emptied to a universal match")
	}
	if v := find(after, tagPatientName); v == nil || len(v.value) != 0 {
		t.Errorf("patient name not emptied")
	}
	h.app.Close()
}

func TestReadPDULimits(t *testing.T) {
	big := (&PDU{Type: TypeAssociateRQ, Data: make([]byte, MaxAssociatePDU+1)}).Bytes()
	if _, err := ReadPDU(bytes.NewReader(big[:HeaderLen]), 0); asError(err) == nil || asError(err).Reason != ReasonPDUTooLarge {
		t.Errorf("oversized A-ASSOCIATE-RQ: %v", err)
	}
	if _, err := ReadPDU(bytes.NewReader((&PDU{Type: TypePData, Data: make([]byte, 2000)}).Bytes()), 1000); asError(err) == nil {
		t.Errorf("P-DATA-TF over max accepted")
	}
	if _, err := ReadPDU(bytes.NewReader(nil), 0); err != io.EOF {
		t.Errorf("empty stream: %v", err)
	}
	if _, err := ReadPDU(bytes.NewReader([]byte{7, 0, 0, 0}), 0); asError(err) == nil || asError(err).Reason != ReasonTruncated {
		t.Errorf("short header: %v", err)
	}
	if _, err := ReadPDU(bytes.NewReader([]byte{5, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0}), 0); asError(err) == nil {
		t.Errorf("A-RELEASE-RQ of 5 bytes accepted")
	}
	rq := buildAssociate(TypeAssociateRQ, ctStorage, []string{ExplicitVRLittleEndian, ImplicitVRLittleEndian}, 16384, 0)
	p, err := ReadPDU(bytes.NewReader(rq), 0)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ParseAssociate(p.Type, p.Data)
	if err != nil {
		t.Fatal(err)
	}
	if a.MaxLength != 16384 || len(a.Contexts) != 2 || a.Contexts[1].ID != 3 || a.Contexts[0].AbstractSyntax != ctStorage ||
		a.Contexts[1].TransferSyntaxes[0] != ImplicitVRLittleEndian || a.CalledAE != "CALLED" || a.ImplementationClassUID != "1.2.3.4" {
		t.Errorf("parsed %+v", a)
	}
	bad := append([]byte(nil), p.Data...)
	bad[68+2] = 0xFF // application context item overruns
	if _, err := ParseAssociate(p.Type, bad); asError(err) == nil {
		t.Errorf("overrunning item accepted")
	}
}

func TestParsePDVs(t *testing.T) {
	b := AppendPDV(nil, 1, true, false, []byte("abc"))
	b = AppendPDV(b, 1, true, true, []byte("de"))
	b = AppendPDV(b, 1, false, true, nil)
	pdvs, err := ParsePDVs(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(pdvs) != 3 || string(pdvs[0].Data) != "abc" || !pdvs[1].Last || pdvs[2].Command || !pdvs[2].Last {
		t.Errorf("parsed %+v", pdvs)
	}
	for _, bad := range [][]byte{{0, 0, 0, 1, 1}, {0, 0, 0, 9, 1, 0, 1}, {0, 0, 0, 2, 1, 0x10}} {
		if _, err := ParsePDVs(bad); err == nil {
			t.Errorf("%x accepted", bad)
		}
	}
}
