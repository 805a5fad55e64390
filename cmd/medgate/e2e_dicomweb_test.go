package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const orthancPlugin = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"

// startOrthanc runs a real Orthanc with its DICOMweb plugin on free ports
// and returns its HTTP address. Orthanc binds every interface; nothing
// in it outlives the test.
func startOrthanc(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("Orthanc"); err != nil {
		t.Skip("Orthanc not installed (apt-get install orthanc orthanc-dicomweb)")
	}
	if _, err := os.Stat(orthancPlugin); err != nil {
		t.Skip("the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")
	}
	dir := t.TempDir()
	port := freePort(t)
	cfg := map[string]any{
		"Name": "medgate-test", "StorageDirectory": dir, "IndexDirectory": dir,
		"HttpPort": port, "DicomPort": freePort(t), "RemoteAccessAllowed": true, "AuthenticationEnabled": false,
		"DicomAlwaysAllowStore": true, "DicomAlwaysAllowEcho": true, "HttpCompressionEnabled": false,
		"Plugins": []string{orthancPlugin}, "DicomWeb": map[string]any{"Enable": true, "Root": "/dicom-web/"},
	}
	b, _ := json.Marshal(cfg)
	path := filepath.Join(dir, "orthanc.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("Orthanc", path)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if resp, err := http.Get("http://" + addr + "/system"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Orthanc did not start:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// canaryObject writes a copy of a pydicom sample whose patient name is
// the canary.
func canaryObject(t *testing.T, sample string) string {
	t.Helper()
	for _, tool := range []string{"dcmodify", "dcmdump"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install dcmtk)", tool)
		}
	}
	b, err := os.ReadFile(filepath.Join("/usr/lib/python3/dist-packages/pydicom/data/test_files", sample))
	if err != nil {
		t.Skip("pydicom sample files not installed (apt-get install python3-pydicom)")
	}
	p := filepath.Join(t.TempDir(), sample)
	os.WriteFile(p, b, 0o644)
	if out, err := exec.Command("dcmodify", "-nb", "-m", "PatientName="+canary, p).CombinedOutput(); err != nil {
		t.Fatalf("dcmodify: %v\n%s", err, out)
	}
	return p
}

// httpDo sends a request and returns the status, Content-Type and body.
func httpDo(t *testing.T, method, url, ct string, body []byte) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && resp.StatusCode == 200 {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

// multipartBody is a STOW-RS body of the given parts (type, content).
func multipartBody(parts ...[2]string) (string, []byte) {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for _, p := range parts {
		pw, _ := w.CreatePart(map[string][]string{"Content-Type": {p[0]}})
		pw.Write([]byte(p[1]))
	}
	w.Close()
	return `multipart/related; type="application/dicom"; boundary=` + w.Boundary(), b.Bytes()
}

// dicomParts writes each application/dicom part of a multipart body to
// a file.
func dicomParts(t *testing.T, ct string, body []byte) []string {
	t.Helper()
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "multipart/related" {
		t.Fatalf("Content-Type %q", ct)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	dir := t.TempDir()
	var files []string
	for i := 0; ; i++ {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Header.Get("Content-Type") != "application/dicom" {
			t.Fatalf("part %d of type %q", i, p.Header.Get("Content-Type"))
		}
		b, _ := io.ReadAll(p)
		f := filepath.Join(dir, fmt.Sprintf("part%d.dcm", i))
		os.WriteFile(f, b, 0o644)
		files = append(files, f)
	}
}

// checkDeidentified checks an object that crossed: the profile's
// attributes handled, no original identifier, pixel data as sent.
func checkDeidentified(t *testing.T, got, src string, originals ...string) {
	t.Helper()
	if v := dcmValue(t, got, "PatientIdentityRemoved"); v != "YES" {
		t.Errorf("Patient Identity Removed is %q", v)
	}
	if v := dcmValue(t, got, "PatientName"); v != "" && v != "(no value available)" {
		t.Errorf("patient name crossed: %q", v)
	}
	if v := dcmValue(t, got, "PatientBirthDate"); v != "" && v != "(no value available)" {
		t.Errorf("birth date crossed: %q", v)
	}
	raw, _ := os.ReadFile(got)
	for _, o := range append(originals, canary, "CANARY") {
		if bytes.Contains(raw, []byte(o)) {
			t.Errorf("an original value crossed: %s", o)
		}
	}
	if a, b := pixels(t, src), pixels(t, got); len(a) == 0 || !bytes.Equal(a, b) {
		t.Errorf("pixel data differs: %d bytes sent, %d arrived", len(a), len(b))
	}
}

// noCanary checks that the canary is nowhere in a sidecar's logs or
// events.
func noCanary(t *testing.T, scs ...*sidecar) {
	t.Helper()
	for _, s := range scs {
		ev, _ := os.ReadFile(s.events)
		for what, text := range map[string]string{"logs": s.logs.String(), "events": string(ev)} {
			if strings.Contains(text, "CANARY") || strings.Contains(text, "Zebulon") {
				t.Errorf("the canary is in a sidecar's %s", what)
			}
		}
	}
}

// TestE2EDICOMwebAcrossTheBorder puts a real Orthanc in the EU behind an
// inbound sidecar that de-identifies what leaves toward a lab in CN. The
// lab finds studies with QIDO-RS and learns only pseudonyms and remapped
// UIDs, queries again by the pseudonym, retrieves the study with WADO-RS
// by its remapped UID (masked objects, pixel data as stored) and its
// metadata; rendered frames cannot be masked and are refused.
func TestE2EDICOMwebAcrossTheBorder(t *testing.T) {
	orthanc := startOrthanc(t)
	src := canaryObject(t, "CT_small.dcm")
	other := filepath.Join("/usr/lib/python3/dist-packages/pydicom/data/test_files", "MR_small.dcm")
	for _, f := range []string{src, other} {
		b, _ := os.ReadFile(f)
		if code, _, out := httpDo(t, "POST", "http://"+orthanc+"/instances", "application/dicom", b); code != 200 {
			t.Fatalf("storing %s in Orthanc: %d %s", f, code, out)
		}
	}
	if _, _, direct := httpDo(t, "GET", "http://"+orthanc+"/dicom-web/studies", "", nil); !bytes.Contains(direct, []byte("CANARY")) {
		t.Fatal("Orthanc does not hold the canary: the test would prove nothing")
	}
	origPID, origStudy := dcmValue(t, src, "PatientID"), dcmValue(t, src, "StudyInstanceUID")
	originals := []string{origStudy, dcmValue(t, src, "SeriesInstanceUID"), dcmValue(t, src, "SOPInstanceUID")}

	ca := newTestCA(t, "hospital.example")
	inEnv := identityEnv(ca.issue("spiffe://hospital.example/eu/pacs", time.Hour), ca.bundle())
	inEnv["MEDGATE_INBOUND_LISTEN"] = "127.0.0.1:0"
	inEnv["MEDGATE_INBOUND_UPSTREAM"] = orthanc
	inEnv["MEDGATE_INBOUND_PROTOCOL"] = "http"
	inEnv["MEDGATE_POLICY_FILE"] = archivePolicy(t, "")
	in := startSidecar(t, inEnv)
	lab := startSidecar(t, outboundEnv(ca, "spiffe://hospital.example/cn/lab", in.in, "spiffe://hospital.example/eu/pacs"))
	base := "http://" + lab.out + "/dicom-web"
	var arrived [][]byte

	// QIDO-RS: every study, masked.
	code, ct, body := httpDo(t, "GET", base+"/studies", "", nil)
	if code != 200 || ct != "application/dicom+json" {
		t.Fatalf("QIDO-RS through the sidecars: %d %s %s", code, ct, body)
	}
	arrived = append(arrived, body)
	var studies []map[string]struct {
		VR    string `json:"vr"`
		Value []any  `json:"Value"`
	}
	if err := json.Unmarshal(body, &studies); err != nil || len(studies) != 2 {
		t.Fatalf("QIDO-RS answer: %v, %d studies", err, len(studies))
	}
	for _, o := range append(originals, origPID) {
		if bytes.Contains(body, []byte(o)) {
			t.Errorf("QIDO-RS: an original identifier crossed: %s", o)
		}
	}
	var token, study string
	for _, s := range studies {
		if len(s["00100010"].Value) != 0 {
			t.Errorf("QIDO-RS: a patient name crossed")
		}
		if s["00080061"].Value[0] == "CT" {
			token, study = s["00100020"].Value[0].(string), s["0020000D"].Value[0].(string)
		}
	}
	if token == "" || !strings.HasPrefix(study, "2.25.") {
		t.Fatalf("QIDO-RS: no pseudonym or remapped study UID for the CT study")
	}
	// Query by the pseudonym: the archive's sidecar translates it back.
	code, _, body = httpDo(t, "GET", base+"/studies?PatientID="+token, "", nil)
	if err := json.Unmarshal(body, &studies); code != 200 || err != nil || len(studies) != 1 || studies[0]["0020000D"].Value[0] != study {
		t.Fatalf("QIDO-RS by pseudonym: %d, %d studies, want the one remapped study", code, len(studies))
	}
	arrived = append(arrived, body)

	// WADO-RS by the remapped UID: masked objects, pixel data as stored.
	code, ct, body = httpDo(t, "GET", base+"/studies/"+study, "", nil)
	if code != 200 {
		t.Fatalf("WADO-RS through the sidecars: %d %s", code, body)
	}
	arrived = append(arrived, body)
	files := dicomParts(t, ct, body)
	if len(files) != 1 {
		t.Fatalf("WADO-RS returned %d objects, want 1", len(files))
	}
	checkDeidentified(t, files[0], src, append(originals, origPID)...)
	if dcmValue(t, files[0], "PatientID") != token || dcmValue(t, files[0], "StudyInstanceUID") != study {
		t.Error("the retrieved object does not carry the pseudonym and remapped UID the query showed")
	}
	series, instance := dcmValue(t, files[0], "SeriesInstanceUID"), dcmValue(t, files[0], "SOPInstanceUID")

	// Metadata: DICOM JSON, bulk data URIs naming remapped UIDs.
	code, ct, body = httpDo(t, "GET", base+"/studies/"+study+"/metadata", "", nil)
	if code != 200 || ct != "application/dicom+json" || !bytes.Contains(body, []byte("/studies/"+study+"/series/"+series)) {
		t.Errorf("WADO-RS metadata: %d %s", code, ct)
	}
	arrived = append(arrived, body)

	// Frames are application/octet-stream parts: refused, with an event.
	code, _, body = httpDo(t, "GET", base+"/studies/"+study+"/series/"+series+"/instances/"+instance+"/frames/1", "", nil)
	if code != http.StatusBadGateway {
		t.Errorf("frames through a masked route: %d, want 502", code)
	}
	arrived = append(arrived, body)
	if evs := in.eventsWith(func(e map[string]any) bool { return e["kind"] == "session_end" && e["outcome"] == "unmaskable" }); len(evs) == 0 {
		t.Error("no access event for the refused frames")
	}
	objs := in.eventsAtLeast(1, func(e map[string]any) bool {
		o, _ := e["object"].(map[string]any)
		return e["kind"] == "object" && o["operation"] == "GET /dicom-web/studies/{study}" && o["study_uid"] == study && o["patient"] == token
	})
	if len(objs) != 1 {
		t.Errorf("WADO-RS object events: %v", objs)
	}

	for _, b := range arrived {
		if bytes.Contains(b, []byte("CANARY")) || bytes.Contains(b, []byte(origStudy)) {
			t.Error("the canary or an original UID arrived at the lab")
		}
	}
	noCanary(t, in, lab)
	if testing.Verbose() {
		t.Logf("inbound sidecar logs:\n%s", in.logs.String())
	}
}

// TestE2EDICOMwebStoreDeidentified: a workstation in the EU stores a
// study with STOW-RS in a research archive (a real Orthanc) in CN; the
// EU sidecar de-identifies the objects on the way, as read back from
// Orthanc itself. A part it cannot mask is refused and nothing is stored.
func TestE2EDICOMwebStoreDeidentified(t *testing.T) {
	orthanc := startOrthanc(t)
	src := canaryObject(t, "CT_small.dcm")
	mr := filepath.Join("/usr/lib/python3/dist-packages/pydicom/data/test_files", "MR_small.dcm")

	ca := newTestCA(t, "hospital.example")
	inEnv := identityEnv(ca.issue("spiffe://hospital.example/cn/research", time.Hour), ca.bundle())
	inEnv["MEDGATE_INBOUND_LISTEN"] = "127.0.0.1:0"
	inEnv["MEDGATE_INBOUND_UPSTREAM"] = orthanc
	inEnv["MEDGATE_INBOUND_ALLOW"] = "spiffe://hospital.example/eu/*"
	in := startSidecar(t, inEnv)
	policy := writeBorderPolicy(t, "dicom-basic", "    - {dataClass: imaging, from: EU, to: CN, action: deidentify, maskingProfile: out}\n",
		"apiVersion: medgate.io/v1\nkind: AccessPolicy\nmetadata: {name: default}\nspec: {direction: outbound, dataClass: imaging, allow: [\"spiffe://hospital.example/cn/*\"]}\n")
	outEnv := outboundEnv(ca, "spiffe://hospital.example/eu/workstation", in.in, "spiffe://hospital.example/cn/research")
	outEnv["MEDGATE_OUTBOUND_PROTOCOL"] = "http"
	outEnv["MEDGATE_POLICY_FILE"] = policy
	out := startSidecar(t, outEnv)

	ctDCM, _ := os.ReadFile(src)
	mrDCM, _ := os.ReadFile(mr)
	ct, body := multipartBody([2]string{"application/dicom", string(ctDCM)}, [2]string{"application/dicom", string(mrDCM)})
	code, _, answer := httpDo(t, "POST", "http://"+out.out+"/dicom-web/studies", ct, body)
	if code != 200 {
		t.Fatalf("STOW-RS through the sidecars: %d %s", code, answer)
	}
	if evs := out.eventsAtLeast(2, func(e map[string]any) bool {
		o, _ := e["object"].(map[string]any)
		return e["kind"] == "object" && o["operation"] == "POST /dicom-web/studies" && o["instance_uid"] != ""
	}); len(evs) != 2 {
		t.Errorf("STOW-RS object events: %v", evs)
	}

	// Read back from Orthanc directly.
	var ids []string
	_, _, list := httpDo(t, "GET", "http://"+orthanc+"/instances", "", nil)
	if err := json.Unmarshal(list, &ids); err != nil || len(ids) != 2 {
		t.Fatalf("Orthanc holds %d instances (%v), want 2", len(ids), err)
	}
	dir := t.TempDir()
	found := map[string]bool{}
	for i, id := range ids {
		_, _, file := httpDo(t, "GET", "http://"+orthanc+"/instances/"+id+"/file", "", nil)
		f := filepath.Join(dir, fmt.Sprintf("%d.dcm", i))
		os.WriteFile(f, file, 0o644)
		sent := mr
		if dcmValue(t, f, "Modality") == "CT" {
			sent = src
		}
		found[sent] = true
		checkDeidentified(t, f, sent, dcmValue(t, sent, "PatientID"), dcmValue(t, sent, "StudyInstanceUID"), dcmValue(t, sent, "SOPInstanceUID"))
	}
	if len(found) != 2 {
		t.Errorf("Orthanc does not hold both objects")
	}

	// A part of a type the codec cannot mask: 502, nothing stored, an event.
	ct, body = multipartBody([2]string{"application/dicom+xml", "<NativeDicomModel/>"}, [2]string{"application/octet-stream", "\x00\x01"})
	if code, _, _ := httpDo(t, "POST", "http://"+out.out+"/dicom-web/studies", ct, body); code != http.StatusBadGateway {
		t.Errorf("a STOW-RS part that cannot be masked: %d, want 502", code)
	}
	if evs := out.eventsWith(func(e map[string]any) bool { return e["kind"] == "session_end" && e["outcome"] == "unmaskable" }); len(evs) == 0 {
		t.Error("no access event for the refused STOW-RS request")
	}
	_, _, list = httpDo(t, "GET", "http://"+orthanc+"/instances", "", nil)
	if json.Unmarshal(list, &ids); len(ids) != 2 {
		t.Errorf("Orthanc holds %d instances after a refused request, want 2", len(ids))
	}
	noCanary(t, in, out)
}
