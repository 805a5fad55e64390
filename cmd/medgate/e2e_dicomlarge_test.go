package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/medgate/medgate/proxy/dicom/dicomtest"
)

// TestE2EDICOMLargeMultiFrame sends a generated 1 GiB multi-frame object
// with storescu through a masked route: what storescp stored has the
// patient's identity removed and every pixel data byte as it was sent.
// (The sidecar's memory during such a transfer is a benchmark figure:
// make bench.)
func TestE2EDICOMLargeMultiFrame(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB transfer")
	}
	for _, tool := range []string{"storescu", "storescp", "dcmdump"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install dcmtk)", tool)
		}
	}
	const size = 1 << 30
	src := filepath.Join(t.TempDir(), "large.dcm")
	if err := dicomtest.WriteLarge(src, size); err != nil {
		t.Fatal(err)
	}
	recv, _, out := maskedStorePair(t, "tcp", "+B")
	host, oport := splitHostPort(t, out.out)

	if o, err := exec.Command("storescu", "-aec", "STORESCP", "-xe", host, oport, src).CombinedOutput(); err != nil {
		t.Fatalf("storescu through the sidecars: %v\n%s", err, o)
	}
	got, _ := filepath.Glob(filepath.Join(recv, "*"))
	if len(got) != 1 {
		t.Fatalf("storescp stored %d files", len(got))
	}
	dump, err := exec.Command("dcmdump", "-q", "-M", "+P", "PatientName", "+P", "PatientID", "+P", "PatientBirthDate", "+P", "PatientIdentityRemoved", "+P", "NumberOfFrames", got[0]).CombinedOutput()
	if err != nil {
		t.Fatalf("dcmdump: %v\n%s", err, dump)
	}
	for _, phi := range []string{"BENCH^PATIENT", "BENCH-4711", "19700101"} {
		if strings.Contains(string(dump), phi) {
			t.Errorf("%s arrived unmasked:\n%s", phi, dump)
		}
	}
	if !strings.Contains(string(dump), "YES") || !strings.Contains(string(dump), "[32]") {
		t.Errorf("want Patient Identity Removed YES and 32 frames:\n%s", dump)
	}
	n, err := checkPixels(got[0])
	if err != nil {
		t.Fatal(err)
	}
	if n != size {
		t.Fatalf("%d pixel data bytes arrived, sent %d", n, size)
	}
}

// checkPixels compares the native OW pixel data of a stored object with
// what dicomtest.WriteLarge wrote, byte for byte, and returns its length.
func checkPixels(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	head, _ := r.Peek(64 << 10)
	tag := []byte{0xE0, 0x7F, 0x10, 0x00, 'O', 'W', 0, 0}
	i := bytes.LastIndex(head, tag)
	if i < 0 {
		return 0, fmt.Errorf("no native pixel data element in the first 64 KiB of %s", path)
	}
	if _, err := r.Discard(i + len(tag)); err != nil {
		return 0, err
	}
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return 0, err
	}
	n := int64(binary.LittleEndian.Uint32(l[:]))
	// The pattern repeats every MiB: compare whole MiB-aligned chunks.
	want := make([]byte, 1<<20)
	for j := range want {
		want[j] = dicomtest.PixelByte(int64(j))
	}
	buf := make([]byte, 1<<20)
	var off int64
	for off < n {
		k, err := io.ReadFull(r, buf[:min(int64(len(buf)), n-off)])
		if !bytes.Equal(buf[:k], want[:k]) {
			return 0, fmt.Errorf("pixel data differs in the MiB at byte %d", off)
		}
		off += int64(k)
		if err != nil {
			return off, err
		}
	}
	return n, nil
}
