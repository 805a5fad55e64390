package dicom

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/medgate/medgate/proxy/mask"
)

// patternReader yields n bytes of a repeating pattern.
type patternReader struct{ n, off int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	k := int(min(int64(len(b)), p.n-p.off))
	for i := range k {
		b[i] = byte((p.off + int64(i)) * 7)
	}
	p.off += int64(k)
	return k, nil
}

// TestLargeObjectBoundedMemory streams a multi-frame object (256 MiB;
// MEDGATE_DICOM_LARGE_MIB sets another size) through the masked filter
// with 16 KiB PDUs both ways, and checks that the heap grows by less
// than 32 MiB while the pixel data arrives byte-identical.
func TestLargeObjectBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("large object")
	}
	mib := int64(256)
	if v, err := strconv.Atoi(os.Getenv("MEDGATE_DICOM_LARGE_MIB")); err == nil && v > 0 {
		mib = int64(v)
	}
	size := mib << 20
	m := basicMasker(t, mask.DICOMOptions{RetainLongitudinalModifiedDates: true})

	var head []byte
	el := func(tag uint32, vr, v string) {
		b := pad(vr, []byte(v))
		head = explicitLE.appendHeader(head, tag, vr, uint32(len(b)))
		head = append(head, b...)
	}
	el(0x00080016, "UI", ctStorage)
	el(tagSOPInstance, "UI", "1.2.826.0.1.3680043.2.1125.1.1")
	el(0x00080020, "DA", "20210304")
	el(tagPatientName, "PN", "CANARY^LARGE")
	el(tagPatientID, "LO", "LARGE-1")
	el(tagStudyUID, "UI", "1.2.826.0.1.3680043.2.1125.1.2")
	el(0x00280008, "IS", strconv.FormatInt(mib, 10))
	maskedHead, _, err := maskBytes(t, m, head, explicitLE, true)
	if err != nil {
		t.Fatal(err)
	}
	skip := int64(len(maskedHead) + 12)

	h := newHarness(t, m, nil)
	h.associate(t, ctStorage, []string{ExplicitVRLittleEndian}, 16384, 16384)

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()

	start := time.Now()
	sendErr := make(chan error, 1)
	go func() {
		cmd := buildCommand(CStoreRQ, 1, ctStorage, "1.2.826.0.1.3680043.2.1125.1.1", true)
		// The command, then the data set in PDUs of 16 KiB.
		if _, err := h.app.Write((&PDU{Type: TypePData, Data: AppendPDV(nil, 1, true, true, cmd)}).Bytes()); err != nil {
			sendErr <- err
			return
		}
		pixHeader := explicitLE.appendHeader(nil, tagPixelData, "OW", uint32(size))
		src := io.MultiReader(bytes.NewReader(head), bytes.NewReader(pixHeader), &patternReader{n: size})
		total := int64(len(head) + len(pixHeader))
		total += size
		buf := make([]byte, 16384-6)
		var sent int64
		for sent < total {
			n, err := io.ReadFull(src, buf[:min(int64(len(buf)), total-sent)])
			if err != nil {
				sendErr <- err
				return
			}
			sent += int64(n)
			pdu := (&PDU{Type: TypePData, Data: AppendPDV(nil, 1, false, sent == total, buf[:n])}).Bytes()
			if _, err := h.app.Write(pdu); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()

	// The peer: every PDU within its maximum, the data set hashed whole
	// and from the pixel data on.
	all := sha256.New()
	tail := &skipHasher{h: sha256.New(), skip: skip}
	var got int64
	var cmdSeen bool
	for done := false; !done; {
		p, err := ReadPDU(h.peerR, 16384)
		if err != nil {
			t.Fatalf("peer: %v", err)
		}
		pdvs, err := ParsePDVs(p.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range pdvs {
			if v.Command {
				cmdSeen = true
				continue
			}
			all.Write(v.Data)
			tail.Write(v.Data)
			got += int64(len(v.Data))
			done = v.Last
		}
	}
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	if !cmdSeen {
		t.Fatal("no command")
	}
	want := sha256.New()
	io.Copy(want, &patternReader{n: size})
	if !bytes.Equal(tail.h.Sum(nil), want.Sum(nil)) || got != skip+size {
		t.Fatalf("pixel data not byte-identical (%d bytes arrived, want %d)", got, skip+size)
	}
	o := <-h.objects
	if o.SHA256 != hex.EncodeToString(all.Sum(nil)) {
		t.Errorf("reported digest differs from what arrived")
	}
	grew := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("%d MiB in %v (%.0f MiB/s); heap in use grew by at most %.1f MiB", mib, elapsed.Round(time.Millisecond),
		float64(mib)/elapsed.Seconds(), float64(grew)/(1<<20))
	if grew > 32<<20 {
		t.Errorf("heap grew by %d MiB streaming %d MiB", grew>>20, mib)
	}
	h.app.Close()
	h.peer.Close()
}

type skipHasher struct {
	h    hash.Hash
	skip int64
}

func (s *skipHasher) Write(b []byte) (int, error) {
	n := len(b)
	if s.skip > 0 {
		k := min(s.skip, int64(len(b)))
		b, s.skip = b[k:], s.skip-k
	}
	s.h.Write(b)
	return n, nil
}

// TestLargeObjectStoreSCU sends a generated multi-frame object of
// MEDGATE_DICOM_LARGE_MIB MiB with storescu through the masking relay to
// storescp, and checks what arrived: masked, pixel data byte-identical,
// and the relay's heap (it runs in this process) bounded. It needs twice
// the object's size on disk, so it runs only when asked.
func TestLargeObjectStoreSCU(t *testing.T) {
	mib, err := strconv.Atoi(os.Getenv("MEDGATE_DICOM_LARGE_MIB"))
	if err != nil || mib <= 0 {
		t.Skip("set MEDGATE_DICOM_LARGE_MIB to run")
	}
	requireTools(t, "storescu", "storescp", "dcmdump")
	size := int64(mib) << 20
	var head []byte
	el := func(tag uint32, vr, v string) {
		b := pad(vr, []byte(v))
		head = explicitLE.appendHeader(head, tag, vr, uint32(len(b)))
		head = append(head, b...)
	}
	const sop = "1.2.826.0.1.3680043.2.1125.1.9"
	el(0x00080016, "UI", ctStorage)
	el(tagSOPInstance, "UI", sop)
	el(0x00080060, "CS", "CT")
	el(tagPatientName, "PN", "CANARY^LARGE")
	el(tagPatientID, "LO", "LARGE-9")
	el(tagStudyUID, "UI", sop+".1")
	el(tagSeriesUID, "UI", sop+".2")
	el(0x00280002, "US", "\x01\x00")
	el(0x00280004, "CS", "MONOCHROME2")
	el(0x00280008, "IS", strconv.Itoa(mib))
	el(0x00280010, "US", "\x00\x04")
	el(0x00280011, "US", "\x00\x01")
	el(0x00280100, "US", "\x10\x00")
	el(0x00280101, "US", "\x10\x00")
	el(0x00280102, "US", "\x0f\x00")
	el(0x00280103, "US", "\x00\x00")
	head = explicitLE.appendHeader(head, tagPixelData, "OW", uint32(size))
	path := filepath.Join(t.TempDir(), "large.dcm")
	if err := writePart10(path, ExplicitVRLittleEndian, ctStorage, sop, head); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, &patternReader{n: size}); err != nil {
		t.Fatal(err)
	}
	f.Close()

	m := basicMasker(t, mask.DICOMOptions{})
	scp, dir := startStoreSCP(t)
	r := startRelay(t, m, scp)
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	host, port, _ := net.SplitHostPort(r.addr)
	start := time.Now()
	out, err := runTool(t, "storescu", "-aec", "STORESCP", host, port, path)
	close(stop)
	if err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	elapsed := time.Since(start)
	files := receivedFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("storescp received %d files", len(files))
	}
	dump, err := runTool(t, "dcmdump", "-q", "-M", "+P", "PatientIdentityRemoved", "+P", "PatientID", "+P", "PatientName", files[0])
	if err != nil || !strings.Contains(dump, "[YES]") || strings.Contains(dump, "CANARY") || !strings.Contains(dump, m.keyer.Token("patient-id", "LARGE-9")) {
		t.Errorf("dcmdump: %v\n%s", err, dump)
	}
	got, err := os.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	st, _ := got.Stat()
	tail := sha256.New()
	if _, err := io.Copy(tail, io.NewSectionReader(got, st.Size()-size, size)); err != nil {
		t.Fatal(err)
	}
	want := sha256.New()
	io.Copy(want, &patternReader{n: size})
	if !bytes.Equal(tail.Sum(nil), want.Sum(nil)) {
		t.Errorf("pixel data not byte-identical")
	}
	grew := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("%d MiB storescu -> relay -> storescp in %v; relay heap in use grew by at most %.1f MiB", mib,
		elapsed.Round(time.Millisecond), float64(grew)/(1<<20))
	if grew > 32<<20 {
		t.Errorf("heap grew by %d MiB", grew>>20)
	}
}
