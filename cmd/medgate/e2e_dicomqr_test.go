package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// archivePolicy is the EU archive's policy: imaging leaves toward CN only
// de-identified with dicom-basic; extra adds access documents.
func archivePolicy(t *testing.T, extra string) string {
	return writeBorderPolicy(t, "dicom-basic",
		"    - {dataClass: imaging, from: EU, to: CN, action: deidentify, maskingProfile: out}\n",
		"apiVersion: medgate.io/v1\nkind: AccessPolicy\nmetadata: {name: default}\nspec: {dataClass: imaging, allow: [\"spiffe://hospital.example/cn/*\"]}\n"+extra)
}

// dcmValue returns the value of one attribute in a file, as dcmdump shows it.
func dcmValue(t *testing.T, file, keyword string) string {
	t.Helper()
	out, err := exec.Command("dcmdump", "-q", "+P", keyword, file).CombinedOutput()
	if err != nil {
		t.Fatalf("dcmdump %s: %v\n%s", file, err, out)
	}
	return valueOf(strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0])
}

// TestE2EDICOMQueryRetrieveByPseudonym puts dcmtk's archive in the EU
// behind an inbound sidecar that de-identifies what leaves toward a lab in
// CN. The lab queries, learns only pseudonyms and remapped UIDs, queries
// again by a pseudonym and retrieves the study with C-GET by its remapped
// UID: the archive's sidecar translates both back and masks what leaves.
func TestE2EDICOMQueryRetrieveByPseudonym(t *testing.T) {
	for _, tool := range []string{"dcmqrscp", "findscu", "getscu", "storescu", "dcmdump"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install dcmtk)", tool)
		}
	}
	samples := "/usr/lib/python3/dist-packages/pydicom/data/test_files"
	names := []string{"CT_small.dcm", "MR_small.dcm", "rtdose.dcm"}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(samples, n)); err != nil {
			t.Skip("pydicom sample files not installed (apt-get install python3-pydicom)")
		}
	}
	// The archive, filled directly inside the EU.
	dir := t.TempDir()
	db := filepath.Join(dir, "db")
	os.Mkdir(db, 0o755)
	port := freePort(t)
	cfg := filepath.Join(dir, "dcmqrscp.cfg")
	os.WriteFile(cfg, []byte(fmt.Sprintf("NetworkTCPPort = %d\nMaxPDUSize = 16384\nMaxAssociations = 16\nHostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\nAETable BEGIN\nARCHIVE %s RW (200, 1024mb) ANY\nAETable END\n", port, db)), 0o644)
	qr := exec.Command("dcmqrscp", "-c", cfg)
	if err := qr.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { qr.Process.Kill(); qr.Wait() }()
	archive := fmt.Sprintf("127.0.0.1:%d", port)
	var originals []string
	waitUntil(t, 10*time.Second, func() bool {
		args := []string{"-aec", "ARCHIVE", "127.0.0.1", fmt.Sprint(port)}
		for _, n := range names {
			args = append(args, filepath.Join(samples, n))
		}
		return exec.Command("storescu", args...).Run() == nil
	})
	for _, n := range names {
		originals = append(originals, dcmValue(t, filepath.Join(samples, n), "StudyInstanceUID"), dcmValue(t, filepath.Join(samples, n), "PatientID"))
	}

	ca := newTestCA(t, "hospital.example")
	policy := archivePolicy(t, "")
	inEnv := identityEnv(ca.issue("spiffe://hospital.example/eu/pacs", time.Hour), ca.bundle())
	inEnv["MEDGATE_INBOUND_LISTEN"] = "127.0.0.1:0"
	inEnv["MEDGATE_INBOUND_UPSTREAM"] = archive
	inEnv["MEDGATE_INBOUND_PROTOCOL"] = "dicom"
	inEnv["MEDGATE_POLICY_FILE"] = policy
	in := startSidecar(t, inEnv)
	lab := startSidecar(t, outboundEnv(ca, "spiffe://hospital.example/cn/lab", in.in, "spiffe://hospital.example/eu/pacs"))
	host, lport := splitHostPort(t, lab.out)

	find := func(keys ...string) []string {
		t.Helper()
		out := t.TempDir()
		args := []string{"-S", "-aec", "ARCHIVE", "-X", "-od", out, "-k", "QueryRetrieveLevel=STUDY"}
		for _, k := range keys {
			args = append(args, "-k", k)
		}
		if res, err := exec.Command("findscu", append(args, host, lport)...).CombinedOutput(); err != nil {
			t.Fatalf("findscu through the sidecars: %v\n%s", err, res)
		}
		rsps, _ := filepath.Glob(filepath.Join(out, "rsp*.dcm"))
		return rsps
	}
	all := find("PatientID", "PatientName", "StudyInstanceUID", "PatientBirthDate")
	if len(all) != len(names) {
		t.Fatalf("C-FIND through the sidecars found %d studies, want %d", len(all), len(names))
	}
	for _, f := range all {
		for _, orig := range originals {
			if v := dcmValue(t, f, "PatientID") + " " + dcmValue(t, f, "StudyInstanceUID"); strings.Contains(v, orig) {
				t.Errorf("an original identifier crossed in a C-FIND response: %s", orig)
			}
		}
		if v := dcmValue(t, f, "PatientBirthDate"); v != "" && v != "(no value available)" {
			t.Errorf("birth date crossed: %q", v)
		}
	}
	token, remapped := dcmValue(t, all[0], "PatientID"), dcmValue(t, all[0], "StudyInstanceUID")
	if token == "" || remapped == "" {
		t.Fatalf("first response lacks a pseudonym or UID")
	}
	byToken := find("PatientID="+token, "StudyInstanceUID")
	if len(byToken) != 1 || dcmValue(t, byToken[0], "StudyInstanceUID") != remapped {
		t.Fatalf("query by pseudonym found %d studies (want 1 with the remapped UID)", len(byToken))
	}
	got := t.TempDir()
	if res, err := exec.Command("getscu", "-S", "-aec", "ARCHIVE", "-od", got, "-k", "QueryRetrieveLevel=STUDY",
		"-k", "StudyInstanceUID="+remapped, host, lport).CombinedOutput(); err != nil {
		t.Fatalf("getscu through the sidecars: %v\n%s", err, res)
	}
	files, _ := filepath.Glob(filepath.Join(got, "*"))
	if len(files) != 1 {
		t.Fatalf("C-GET delivered %d objects, want 1", len(files))
	}
	if dcmValue(t, files[0], "PatientIdentityRemoved") != "YES" || dcmValue(t, files[0], "PatientID") != token ||
		dcmValue(t, files[0], "StudyInstanceUID") != remapped {
		t.Error("the retrieved object is not the masked one")
	}
	raw, _ := os.ReadFile(files[0])
	for _, orig := range originals {
		if strings.Contains(string(raw), orig) {
			t.Errorf("the retrieved object carries an original identifier: %s", orig)
		}
	}
}
