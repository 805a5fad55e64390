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

// TestE2EDICOMMoveThroughSidecars: a lab in CN asks the EU archive to
// C-MOVE a study to the lab's own store. The archive's move destination is
// a sidecar too: the archive opens the new association to an EU outbound
// sidecar, which de-identifies the objects on their way to the CN sidecar
// in front of the lab's storescp.
func TestE2EDICOMMoveThroughSidecars(t *testing.T) {
	for _, tool := range []string{"dcmqrscp", "findscu", "movescu", "storescu", "storescp", "dcmdump"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install dcmtk)", tool)
		}
	}
	samples := "/usr/lib/python3/dist-packages/pydicom/data/test_files"
	names := []string{"CT_small.dcm", "MR_small.dcm"}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(samples, n)); err != nil {
			t.Skip("pydicom sample files not installed (apt-get install python3-pydicom)")
		}
	}
	ca := newTestCA(t, "hospital.example")
	policy := archivePolicy(t, `---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: moves}
spec: {route: default, direction: outbound, dataClass: imaging, allow: ["spiffe://hospital.example/cn/*"]}
`)

	// The lab's store in CN, behind its inbound sidecar.
	store := t.TempDir()
	storePort := freePort(t)
	scp := exec.Command("storescp", "-aet", "LABSTORE", "-od", store, "+uf", "+B", fmt.Sprint(storePort))
	if err := scp.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { scp.Process.Kill(); scp.Wait() }()
	cnEnv := identityEnv(ca.issue("spiffe://hospital.example/cn/lab-store", time.Hour), ca.bundle())
	cnEnv["MEDGATE_INBOUND_LISTEN"] = "127.0.0.1:0"
	cnEnv["MEDGATE_INBOUND_UPSTREAM"] = fmt.Sprintf("127.0.0.1:%d", storePort)
	cnEnv["MEDGATE_INBOUND_ALLOW"] = "spiffe://hospital.example/eu/*"
	cnIn := startSidecar(t, cnEnv)

	// The EU sidecar the archive sends moves through.
	moverEnv := outboundEnv(ca, "spiffe://hospital.example/eu/pacs-mover", cnIn.in, "spiffe://hospital.example/cn/lab-store")
	moverEnv["MEDGATE_OUTBOUND_PROTOCOL"] = "dicom"
	moverEnv["MEDGATE_POLICY_FILE"] = policy
	mover := startSidecar(t, moverEnv)
	_, moverPort := splitHostPort(t, mover.out)

	// The archive, whose move destination LABSTORE is the mover sidecar.
	dir := t.TempDir()
	db := filepath.Join(dir, "db")
	os.Mkdir(db, 0o755)
	port := freePort(t)
	cfg := filepath.Join(dir, "dcmqrscp.cfg")
	os.WriteFile(cfg, []byte(fmt.Sprintf("NetworkTCPPort = %d\nMaxPDUSize = 16384\nMaxAssociations = 16\nHostTable BEGIN\nlabstore = (LABSTORE, 127.0.0.1, %s)\nHostTable END\nVendorTable BEGIN\nVendorTable END\nAETable BEGIN\nARCHIVE %s RW (200, 1024mb) ANY\nAETable END\n", port, moverPort, db)), 0o644)
	qr := exec.Command("dcmqrscp", "-c", cfg)
	if err := qr.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { qr.Process.Kill(); qr.Wait() }()
	waitUntil(t, 10*time.Second, func() bool {
		args := []string{"-aec", "ARCHIVE", "127.0.0.1", fmt.Sprint(port)}
		for _, n := range names {
			args = append(args, filepath.Join(samples, n))
		}
		return exec.Command("storescu", args...).Run() == nil
	})

	// The archive's inbound sidecar, and the lab's outbound one.
	inEnv := identityEnv(ca.issue("spiffe://hospital.example/eu/pacs", time.Hour), ca.bundle())
	inEnv["MEDGATE_INBOUND_LISTEN"] = "127.0.0.1:0"
	inEnv["MEDGATE_INBOUND_UPSTREAM"] = fmt.Sprintf("127.0.0.1:%d", port)
	inEnv["MEDGATE_INBOUND_PROTOCOL"] = "dicom"
	inEnv["MEDGATE_POLICY_FILE"] = policy
	in := startSidecar(t, inEnv)
	lab := startSidecar(t, outboundEnv(ca, "spiffe://hospital.example/cn/lab", in.in, "spiffe://hospital.example/eu/pacs"))
	host, lport := splitHostPort(t, lab.out)

	// The lab learns the study's remapped UID from a query, then moves it.
	out := t.TempDir()
	if res, err := exec.Command("findscu", "-S", "-aec", "ARCHIVE", "-X", "-od", out, "-k", "QueryRetrieveLevel=STUDY",
		"-k", "PatientID", "-k", "StudyInstanceUID", host, lport).CombinedOutput(); err != nil {
		t.Fatalf("findscu: %v\n%s", err, res)
	}
	rsps, _ := filepath.Glob(filepath.Join(out, "rsp*.dcm"))
	if len(rsps) != len(names) {
		t.Fatalf("C-FIND found %d studies, want %d", len(rsps), len(names))
	}
	remapped := dcmValue(t, rsps[0], "StudyInstanceUID")
	if res, err := exec.Command("movescu", "-S", "-aec", "ARCHIVE", "-aem", "LABSTORE", "-k", "QueryRetrieveLevel=STUDY",
		"-k", "StudyInstanceUID="+remapped, host, lport).CombinedOutput(); err != nil {
		t.Fatalf("movescu through the sidecars: %v\n%s", err, res)
	}
	var files []string
	waitUntil(t, 10*time.Second, func() bool { files, _ = filepath.Glob(filepath.Join(store, "*")); return len(files) > 0 })
	if len(files) != 1 {
		t.Fatalf("the lab's store received %d objects, want 1", len(files))
	}
	if dcmValue(t, files[0], "PatientIdentityRemoved") != "YES" || dcmValue(t, files[0], "StudyInstanceUID") != remapped {
		t.Error("the moved object is not the masked one, under the UID the lab asked for")
	}
	raw, _ := os.ReadFile(files[0])
	for _, n := range names {
		for _, kw := range []string{"StudyInstanceUID", "PatientID", "PatientName"} {
			if v := dcmValue(t, filepath.Join(samples, n), kw); len(v) > 3 && strings.Contains(string(raw), v) {
				t.Errorf("the moved object carries the original %s", kw)
			}
		}
	}
	if evs := mover.eventsWith(func(e map[string]any) bool { return e["kind"] == "object" }); len(evs) == 0 {
		t.Error("the move's C-STORE was not recorded by the EU sidecar that masked it")
	}
}
