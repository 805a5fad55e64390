package httpx

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The end-to-end test runs a real FHIR server: Medplum's FhirRouter over
// its in-memory repository (npm, testdata/node). It skips, saying why,
// when node or the packages are missing.

const nodeModules = "testdata/node/node_modules"

var npmOnce sync.Once

func startFHIRServer(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: skipped with -short")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("end-to-end: node missing (apt-get install nodejs npm)")
	}
	npmOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(nodeModules, "@medplum/fhir-router")); err == nil {
			return
		}
		if _, err := exec.LookPath("npm"); err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = "testdata/node"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("npm ci in testdata/node: %v\n%s", err, out)
		}
	})
	if _, err := os.Stat(filepath.Join(nodeModules, "@medplum/fhir-router")); err != nil {
		t.Skip("end-to-end: @medplum/fhir-router missing and npm could not install it (cd proxy/httpx/testdata/node && npm ci)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "node", "server.js")
	cmd.Dir = "testdata/node"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("server stderr:\n%s", stderr.String())
		}
	})
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
		t.Fatalf("FHIR server did not start: %s", stderr.String())
	}
	return ""
}

func TestEndToEndMedplum(t *testing.T) {
	addr := startFHIRServer(t)
	client := &http.Client{Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()
	do := func(method, url string, body string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/fhir+json")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		return resp, b
	}

	// Load a patient, a relative and results straight into the server.
	tx := `{"resourceType":"Bundle","type":"transaction","entry":[
	 {"fullUrl":"urn:uuid:11111111-1111-4111-8111-111111111111","request":{"method":"POST","url":"Patient"},
	  "resource":{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"MRN12345"}],"name":[{"family":"Canarywhistle","given":["Zelda"]}],
	   "telecom":[{"system":"phone","value":"(412) 555-0199"}],"birthDate":"1928-03-14","gender":"female",
	   "address":[{"line":["42 Lantern Way"],"city":"Pittsburgh","state":"PA","postalCode":"15226"}]}},
	 {"request":{"method":"POST","url":"RelatedPerson"},"resource":{"resourceType":"RelatedPerson","patient":{"reference":"urn:uuid:11111111-1111-4111-8111-111111111111"},
	   "name":[{"family":"Canarywhistle","given":["Otto"]}],"birthDate":"1930-01-01"}},
	 {"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation","status":"final","code":{"text":"Cholesterol"},
	   "subject":{"reference":"urn:uuid:11111111-1111-4111-8111-111111111111","display":"Zelda Canarywhistle"},"effectiveDateTime":"2024-05-12T08:30:00Z","valueQuantity":{"value":182,"unit":"mg/dL"}}}]}`
	resp, body := do("POST", "http://"+addr+"/fhir/", tx)
	if resp.StatusCode != 200 {
		t.Fatalf("transaction: %d %s", resp.StatusCode, body)
	}
	var created struct {
		Entry []struct {
			Resource struct{ ResourceType, ID string }
		}
	}
	json.Unmarshal(body, &created)
	var patientID string
	for _, e := range created.Entry {
		if e.Resource.ResourceType == "Patient" {
			patientID = e.Resource.ID
		}
	}
	if patientID == "" {
		t.Fatalf("no patient created: %s", body)
	}

	rl := startRelay(t, hipaaCodec(t), addr)
	base := "http://" + rl.ln.Addr().String() + "/fhir/"
	k := testKeyer(t)
	id := k.Token("other", "Patient/"+patientID)
	noCanary := func(what string, b []byte) {
		t.Helper()
		for _, c := range []string{"Canarywhistle", "Zelda", "Otto", "Lantern", "Pittsburgh", "MRN12345", "555-0199", "1928-03-14", "15226", patientID, "2024-05-12T"} {
			if bytes.Contains(b, []byte(c)) {
				t.Errorf("%s: %q crossed", what, c)
			}
		}
	}

	resp, body = do("GET", base+"Patient/"+patientID, "")
	noCanary("read", body)
	var p map[string]any
	json.Unmarshal(body, &p)
	if resp.StatusCode != 200 || p["id"] != id || p["birthDate"] != "1934" || p["gender"] != "female" {
		t.Errorf("read: %d %s", resp.StatusCode, body)
	}

	resp, body = do("GET", base+"Patient?name=Canarywhistle", "")
	noCanary("search", body)
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"id":"`+id+`"`)) {
		t.Errorf("search: %d %s", resp.StatusCode, body)
	}

	resp, body = do("GET", base+"Observation?subject=Patient/"+patientID, "")
	noCanary("observations", body)
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"subject":{"reference":"Patient/`+id+`"}`)) ||
		!bytes.Contains(body, []byte(`"effectiveDateTime":"2024"`)) || !bytes.Contains(body, []byte(`"value":182`)) {
		t.Errorf("observations: %d %s", resp.StatusCode, body)
	}

	resp, body = do("GET", base+"RelatedPerson?patient=Patient/"+patientID, "")
	noCanary("relatives", body)
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"patient":{"reference":"Patient/`+id+`"}`)) {
		t.Errorf("relatives: %d %s", resp.StatusCode, body)
	}

	resp, body = do("POST", base+"Patient", `{"resourceType":"Patient","name":[{"family":"Canarywhistle"}],"identifier":[{"value":"MRN777"}]}`)
	noCanary("create", body)
	if resp.StatusCode != 201 || !strings.Contains(resp.Header.Get("Location"), "/fhir/Patient/") || bytes.Contains(body, []byte("MRN777")) {
		t.Errorf("create: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	var made map[string]any
	json.Unmarshal(body, &made)
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "/Patient/"+made["id"].(string)+"/") {
		t.Errorf("Location %q does not name the masked id %v", loc, made["id"])
	}

	resp, body = do("GET", base+"Patient/no-such-patient", "")
	if resp.StatusCode != 404 || !bytes.Contains(body, []byte("OperationOutcome")) {
		t.Errorf("not found: %d %s", resp.StatusCode, body)
	}
	client.CloseIdleConnections()
	_, errs := rl.results()
	if len(errs) != 0 {
		t.Errorf("relay errors: %v", errs)
	}
}
