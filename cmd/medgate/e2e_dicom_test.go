package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestE2EDICOMStoreDeidentified pushes pydicom's sample objects with the
// real storescu (and odil, which packs PDUs its own way) from an EU
// modality through two sidecars to a real storescp at a lab in CN; the EU
// sidecar de-identifies them on the way. It runs over TCP and over QUIC.
func TestE2EDICOMStoreDeidentified(t *testing.T) {
	for _, transport := range []string{"tcp", "quic"} {
		t.Run(transport, func(t *testing.T) { testDICOMStore(t, transport) })
	}
}

// maskedStorePair starts storescp (with extra options) behind an inbound
// sidecar of a CN lab, and an outbound sidecar of an EU modality that
// de-identifies with dicom-basic what it sends there over transport. It
// returns storescp's directory and the inbound and outbound sidecars.
func maskedStorePair(t *testing.T, transport string, scpOpts ...string) (recv string, in, out *sidecar) {
	t.Helper()
	ca := newTestCA(t, "hospital.example")
	recv = t.TempDir()
	port := freePort(t)
	scp := exec.Command("storescp", append(append([]string{"-aet", "STORESCP", "-od", recv, "+uf"}, scpOpts...), fmt.Sprint(port))...)
	if err := scp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { scp.Process.Kill(); scp.Wait() })

	inEnv := identityEnv(ca.issue("spiffe://hospital.example/cn/lab", time.Hour), ca.bundle())
	inEnv["MEDGATE_INBOUND_LISTEN"] = "127.0.0.1:0"
	inEnv["MEDGATE_INBOUND_UPSTREAM"] = fmt.Sprintf("127.0.0.1:%d", port)
	inEnv["MEDGATE_INBOUND_ALLOW"] = "spiffe://hospital.example/eu/*"
	in = startSidecar(t, inEnv)
	policy := writeBorderPolicy(t, "dicom-basic", "    - {dataClass: imaging, from: EU, to: CN, action: deidentify, maskingProfile: out}\n", "apiVersion: medgate.io/v1\nkind: AccessPolicy\nmetadata: {name: default}\nspec: {direction: outbound, dataClass: imaging, allow: [\"spiffe://hospital.example/cn/*\"]}\n")
	outEnv := outboundEnv(ca, "spiffe://hospital.example/eu/modality", in.in, "spiffe://hospital.example/cn/lab")
	outEnv["MEDGATE_OUTBOUND_PROTOCOL"] = "dicom"
	outEnv["MEDGATE_OUTBOUND_TRANSPORT"] = transport
	outEnv["MEDGATE_POLICY_FILE"] = policy
	return recv, in, startSidecar(t, outEnv)
}

func testDICOMStore(t *testing.T, transport string) {
	for _, tool := range []string{"storescu", "storescp", "dcmdump"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install dcmtk)", tool)
		}
	}
	samples := "/usr/lib/python3/dist-packages/pydicom/data/test_files"
	if _, err := os.Stat(filepath.Join(samples, "CT_small.dcm")); err != nil {
		t.Skip("pydicom sample files not installed (apt-get install python3-pydicom)")
	}
	recv, _, out := maskedStorePair(t, transport, "+xa", "+B")
	host, oport := splitHostPort(t, out.out)

	tests := []struct{ file, propose, scu string }{
		{"CT_small.dcm", "-xe", "storescu"},
		{"MR_small_implicit.dcm", "-xi", "storescu"},
		{"MR_small_bigendian.dcm", "-xb", "storescu"},
		{"MR_small_RLE.dcm", "-xr", "storescu"},
		{"CT_small.dcm", "", "odil"},
	}
	for _, tt := range tests {
		t.Run(tt.scu+"/"+tt.file, func(t *testing.T) {
			before, _ := filepath.Glob(filepath.Join(recv, "*"))
			src := filepath.Join(samples, tt.file)
			cmd := exec.Command("storescu", "-aec", "STORESCP", tt.propose, host, oport, src)
			if tt.scu == "odil" {
				if _, err := exec.LookPath("odil"); err != nil {
					t.Skip("odil not installed (apt-get install odil)")
				}
				cmd = exec.Command("odil", "store", host, oport, "ODIL", "STORESCP", src)
			}
			if o, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s through the sidecars: %v\n%s", tt.scu, err, o)
			}
			after, _ := filepath.Glob(filepath.Join(recv, "*"))
			if len(after) != len(before)+1 {
				t.Fatalf("storescp received %d new files", len(after)-len(before))
			}
			got := after[len(after)-1]
			for _, f := range after {
				if !contains(before, f) {
					got = f
				}
			}
			dump, err := exec.Command("dcmdump", "-q", "+P", "PatientName", "+P", "PatientID", "+P", "PatientIdentityRemoved", "+P", "StudyInstanceUID", got).CombinedOutput()
			if err != nil {
				t.Fatalf("dcmdump: %v\n%s", err, dump)
			}
			orig, _ := exec.Command("dcmdump", "-q", "+P", "PatientName", "+P", "PatientID", "+P", "StudyInstanceUID", src).CombinedOutput()
			if !strings.Contains(string(dump), "YES") {
				t.Errorf("no Patient Identity Removed YES:\n%s", dump)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(orig)), "\n") {
				v := valueOf(line)
				if len(v) > 3 && strings.Contains(string(dump), v) {
					t.Errorf("original value %q arrived unmasked", v)
				}
			}
			// Pixel data crosses byte for byte (odil re-encodes what it
			// sends, so only its presence is checked).
			if tt.scu == "odil" {
				if len(pixels(t, got)) == 0 {
					t.Error("no pixel data arrived")
				}
				return
			}
			if a, b := pixels(t, src), pixels(t, got); len(a) == 0 || !bytes.Equal(a, b) {
				t.Errorf("pixel data differs: %d bytes sent, %d arrived", len(a), len(b))
			}
		})
	}
	if evs := out.eventsAtLeast(len(tests), func(e map[string]any) bool { return e["kind"] == "object" }); len(evs) < len(tests) {
		t.Errorf("%d object events for %d objects", len(evs), len(tests))
	}
	// Fail closed: a deflated data set cannot be masked in line, so the
	// association is aborted, nothing is stored, and the event says why.
	if transport == "tcp" {
		before, _ := filepath.Glob(filepath.Join(recv, "*"))
		o, err := exec.Command("storescu", "-aec", "STORESCP", "-xd", host, oport, filepath.Join(samples, "image_dfl.dcm")).CombinedOutput()
		if err == nil && !strings.Contains(string(o), "E:") {
			t.Errorf("a deflated object was accepted on a masked route:\n%s", o)
		}
		if after, _ := filepath.Glob(filepath.Join(recv, "*")); len(after) != len(before) {
			t.Error("a deflated object reached the store")
		}
		if evs := out.eventsWith(func(e map[string]any) bool { return e["kind"] == "session_end" && e["outcome"] == "unmaskable" }); len(evs) == 0 {
			t.Error("no access event for the refused deflated object")
		}
	}
	if transport == "quic" {
		if _, metrics := out.get("/metrics"); !strings.Contains(metrics, `medgate_tls_handshakes_total{result="ok",side="dial_quic"} 1`) {
			t.Error("the objects did not travel over one QUIC connection")
		}
	}
}

func splitHostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	return addr[:i], addr[i+1:]
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// valueOf returns the value in brackets of a dcmdump line.
func valueOf(line string) string {
	i, j := strings.Index(line, "["), strings.LastIndex(line, "]")
	if i < 0 || j <= i {
		return ""
	}
	return line[i+1 : j]
}

// pixels returns the raw value of (7FE0,0010) as dcmdump writes it out.
func pixels(t *testing.T, file string) []byte {
	t.Helper()
	dir := t.TempDir()
	if o, err := exec.Command("dcmdump", "-q", "+W", dir, file).CombinedOutput(); err != nil {
		t.Fatalf("dcmdump +W: %v\n%s", err, o)
	}
	var all []byte
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		all = append(all, b...)
	}
	return all
}
