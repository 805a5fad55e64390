package dicom

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"os"
	"runtime"
	"strconv"
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
