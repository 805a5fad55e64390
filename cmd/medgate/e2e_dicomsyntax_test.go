package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestE2EDICOMTransferSyntaxes sends one of pydicom's samples per kind of
// encoding the codec must parse with the real storescu through both
// sidecars to a real storescp: every uncompressed syntax, the compressed
// ones whose pixel data is encapsulated (JPEG baseline, JPEG 2000,
// JPEG-LS, RLE), a multi-frame object, an ECG whose hundreds of sequences
// have undefined lengths, and person names outside ASCII. Each arrives
// de-identified, with its pixel (or waveform) data byte for byte.
func TestE2EDICOMTransferSyntaxes(t *testing.T) {
	for _, tool := range []string{"storescu", "storescp", "dcmdump", "dcmodify"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install dcmtk)", tool)
		}
	}
	samples := "/usr/lib/python3/dist-packages/pydicom/data/test_files"
	if _, err := os.Stat(filepath.Join(samples, "CT_small.dcm")); err != nil {
		t.Skip("pydicom sample files not installed (apt-get install python3-pydicom)")
	}
	recv, in, out := maskedStorePair(t, "tcp", "+xa")
	host, oport := splitHostPort(t, out.out)

	tests := []struct{ name, file, propose string }{
		{"explicit little endian, canary", canaryObject(t, "CT_small.dcm"), "-xe"},
		{"implicit little endian", "MR_small_implicit.dcm", "-xi"},
		{"explicit big endian", "MR_small_bigendian.dcm", "-xb"},
		{"JPEG baseline", "SC_rgb_jpeg_dcmtk.dcm", "-xy"},
		{"JPEG 2000 lossless", "MR_small_jp2klossless.dcm", "-xv"},
		{"JPEG-LS lossless", "MR_small_jpeg_ls_lossless.dcm", "-xt"},
		{"RLE lossless", "MR_small_RLE.dcm", "-xr"},
		{"multi-frame", "rtdose.dcm", "-xi"},
		{"undefined-length sequences", "waveform_ecg.dcm", "-xe"},
		{"Latin-1 person name", "../charset_files/chrFren.dcm", "-xe"},
		{"UTF-8 person name", "../charset_files/chrX1.dcm", "-xe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.file
			if !filepath.IsAbs(src) {
				src = filepath.Join(samples, tt.file)
			}
			if _, err := os.Stat(src); err != nil {
				t.Skipf("sample %s not installed", tt.file)
			}
			before, _ := filepath.Glob(filepath.Join(recv, "*"))
			if o, err := exec.Command("storescu", "-aec", "STORESCP", tt.propose, host, oport, src).CombinedOutput(); err != nil || bytes.Contains(o, []byte("E: ")) {
				t.Fatalf("storescu through the sidecars: %v\n%s", err, o)
			}
			var got string
			after, _ := filepath.Glob(filepath.Join(recv, "*"))
			for _, f := range after {
				if !contains(before, f) {
					got = f
				}
			}
			if got == "" {
				t.Fatal("storescp received nothing")
			}
			if v := dcmValue(t, got, "PatientIdentityRemoved"); v != "YES" {
				t.Errorf("Patient Identity Removed is %q", v)
			}
			if ts, want := dcmValue(t, got, "TransferSyntaxUID"), dcmValue(t, src, "TransferSyntaxUID"); ts != want {
				t.Errorf("arrived in %s, sent in %s", ts, want)
			}
			// Every value, in sequences too; a value as a whole, so a short
			// one (ReferringPhysicianName "2721") is not found inside a
			// remapped UID's digits.
			dump, err := exec.Command("dcmdump", "-q", "+L", got).CombinedOutput()
			if err != nil {
				t.Fatalf("dcmdump: %v\n%s", err, dump)
			}
			for _, kw := range []string{"PatientName", "PatientID", "StudyInstanceUID", "SOPInstanceUID", "InstitutionName", "ReferringPhysicianName"} {
				// dcmdump prints values in the file's own character set.
				v := dcmValue(t, src, kw)
				if v == "" || v == "(no value available)" || v == "Anonymous" {
					continue
				}
				if dcmValue(t, got, kw) == v || kw != "InstitutionName" && strings.Contains(string(dump), "["+v+"]") {
					t.Errorf("%s arrived unmasked", kw)
				}
			}
			if a, b := pixels(t, src), pixels(t, got); len(a) == 0 && tt.file != "waveform_ecg.dcm" || !bytes.Equal(a, b) {
				t.Errorf("pixel data differs: %d bytes sent, %d arrived", len(a), len(b))
			}
			if a, b := fullValues(t, src, "WaveformData"), fullValues(t, got, "WaveformData"); a != b || tt.file == "waveform_ecg.dcm" && a == "" {
				t.Errorf("waveform data differs: %d bytes of dump sent, %d arrived", len(a), len(b))
			}
		})
	}
	if evs := out.eventsAtLeast(len(tests), func(e map[string]any) bool { return e["kind"] == "object" }); len(evs) < len(tests) {
		t.Errorf("%d object events for %d objects", len(evs), len(tests))
	}
	noCanary(t, in, out)
}

// fullValues returns every value of an attribute, wherever it is, as
// dcmdump prints it in full.
func fullValues(t *testing.T, file, keyword string) string {
	t.Helper()
	out, err := exec.Command("dcmdump", "-q", "+L", "+P", keyword, file).CombinedOutput()
	if err != nil {
		t.Fatalf("dcmdump %s: %v\n%s", file, err, out)
	}
	return string(out)
}
