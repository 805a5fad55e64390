package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startMedplum runs the real FHIR server (Medplum's router over its memory
// repository) the httpx tests use.
func startMedplum(t *testing.T) string {
	t.Helper()
	dir := "../../proxy/httpx/testdata/node"
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node not installed (apt-get install nodejs npm)")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules/@medplum/fhir-router")); err != nil {
		t.Skip("Medplum not installed (cd proxy/httpx/testdata/node && npm ci; .ci/install-deps does it)")
	}
	cmd := exec.Command("node", "server.js")
	cmd.Dir = dir
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	port := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), "LISTENING "); ok {
				port <- p
			}
		}
	}()
	select {
	case p := <-port:
		return "127.0.0.1:" + p
	case <-time.After(60 * time.Second):
		t.Fatal("FHIR server did not start")
		return ""
	}
}

// TestE2EFHIRReadsAcrossTheBorder: a FHIR server in the EU behind an
// inbound sidecar; a client in the US reads Patients de-identified, a
// client in the EU reads them whole.
func TestE2EFHIRReadsAcrossTheBorder(t *testing.T) {
	server := startMedplum(t)
	// A patient recorded inside the EU, directly at the server.
	resp, err := http.Post("http://"+server+"/fhir/Patient", "application/fhir+json", strings.NewReader(
		`{"resourceType":"Patient","identifier":[{"system":"urn:eu-hospital:mrn","value":"4711"}],"name":[{"family":"Zebulon","given":["Quixote"]}],"birthDate":"1970-01-01","address":[{"line":["12 Rue Canary"],"city":"Lyon","postalCode":"69001"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var created map[string]any
	json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	id, _ := created["id"].(string)
	if resp.StatusCode != 201 || id == "" {
		t.Fatalf("create: %d %v", resp.StatusCode, created)
	}

	ca := newTestCA(t, "hospital.example")
	policy := writeBorderPolicy(t, "hipaa-safe-harbor", "    - {dataClass: records, from: EU, to: EU, action: allow}\n    - {dataClass: records, from: EU, to: US, action: deidentify, maskingProfile: out}\n", "apiVersion: medgate.io/v1\nkind: AccessPolicy\nmetadata: {name: default}\nspec: {dataClass: records, allow: [\"spiffe://hospital.example/eu/*\", \"spiffe://hospital.example/us/*\"]}\n")
	inEnv := identityEnv(ca.issue("spiffe://hospital.example/eu/ehr", time.Hour), ca.bundle())
	inEnv["MEDGATE_INBOUND_LISTEN"] = "127.0.0.1:0"
	inEnv["MEDGATE_INBOUND_UPSTREAM"] = server
	inEnv["MEDGATE_INBOUND_PROTOCOL"] = "http"
	inEnv["MEDGATE_POLICY_FILE"] = policy
	in := startSidecar(t, inEnv)
	client := func(id string) *sidecar {
		return startSidecar(t, outboundEnv(ca, id, in.in, "spiffe://hospital.example/eu/ehr"))
	}
	us, eu := client("spiffe://hospital.example/us/research"), client("spiffe://hospital.example/eu/ward")
	get := func(sc *sidecar, path string) string {
		t.Helper()
		resp, err := http.Get("http://" + sc.out + "/fhir/" + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}

	whole := get(eu, "Patient/"+id)
	if !strings.Contains(whole, "Zebulon") || !strings.Contains(whole, "1970-01-01") {
		t.Errorf("a client in the EU did not read the record whole: %s", whole)
	}
	read := get(us, "Patient/"+id)
	search := get(us, "Patient?_count=10")
	for what, body := range map[string]string{"read": read, "search": search} {
		for _, phi := range []string{"Zebulon", "Quixote", "4711", "1970-01-01", "Rue Canary", `"` + id + `"`} {
			if strings.Contains(body, phi) {
				t.Errorf("%s: %q crossed the border: %s", what, phi, body)
			}
		}
	}
	var p map[string]any
	if err := json.Unmarshal([]byte(read), &p); err != nil || p["resourceType"] != "Patient" || p["id"] == "" {
		t.Fatalf("masked read is not a Patient: %v %s", err, read)
	}
	if !strings.Contains(search, p["id"].(string)) {
		t.Errorf("the pseudonymized id %v differs between read and search", p["id"])
	}
	if evs := in.eventsAtLeast(2, func(e map[string]any) bool { return e["kind"] == "object" }); len(evs) < 2 {
		t.Errorf("object events: %v", evs)
	}
}
