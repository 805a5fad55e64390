package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestE2EHTTPInvalidJSONFailsClosed: an app behind a masked http route
// answers with JSON that cannot be walked; the client gets 502, the event
// says why, and nothing of the body crosses.
func TestE2EHTTPInvalidJSONFailsClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/fhir+json")
		io.WriteString(w, `{"resourceType":"Patient","name":[{"family":"`+canary+`","given":["Q"`)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	ca := newTestCA(t, "hospital.example")
	policy := writeBorderPolicy(t, "hipaa-safe-harbor", "    - {dataClass: records, from: EU, to: US, action: deidentify, maskingProfile: out}\n", "apiVersion: medgate.io/v1\nkind: AccessPolicy\nmetadata: {name: default}\nspec: {dataClass: records, allow: [\"spiffe://hospital.example/us/*\"]}\n")
	inEnv := identityEnv(ca.issue("spiffe://hospital.example/eu/ehr", time.Hour), ca.bundle())
	inEnv["MEDGATE_INBOUND_LISTEN"] = "127.0.0.1:0"
	inEnv["MEDGATE_INBOUND_UPSTREAM"] = ln.Addr().String()
	inEnv["MEDGATE_INBOUND_PROTOCOL"] = "http"
	inEnv["MEDGATE_POLICY_FILE"] = policy
	in := startSidecar(t, inEnv)
	us := startSidecar(t, outboundEnv(ca, "spiffe://hospital.example/us/research", in.in, "spiffe://hospital.example/eu/ehr"))

	resp, err := http.Get("http://" + us.out + "/fhir/Patient/1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502", resp.StatusCode)
	}
	if strings.Contains(string(body), "Zebulon") {
		t.Errorf("the unmaskable body crossed: %s", body)
	}
	if evs := in.eventsWith(func(e map[string]any) bool { return e["kind"] == "session_end" && e["outcome"] == "unmaskable" }); len(evs) == 0 {
		t.Error("no unmaskable event")
	}
	noCanary(t, in, us)
}

// TestE2EDICOMTruncatedPDUFailsClosed: a client that sends a P-DATA PDU
// shorter than its header says, then closes, on a masked route: the app
// receives no data set and the event says why.
func TestE2EDICOMTruncatedPDUFailsClosed(t *testing.T) {
	if _, err := exec.LookPath("storescu"); err != nil {
		t.Skip("storescu not installed (apt-get install dcmtk)")
	}
	recv, _, out := maskedStorePair(t, "tcp", "+xa")
	c, err := net.DialTimeout("tcp", out.out, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	// A valid A-ASSOCIATE-RQ for CT storage, explicit VR little endian.
	if _, err := c.Write(associateRQ("STORESCP", "TRUNC", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")); err != nil {
		t.Fatal(err)
	}
	var hdr [6]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatalf("no association answer: %v", err)
	}
	n := binary.BigEndian.Uint32(hdr[2:])
	io.CopyN(io.Discard, c, int64(n))
	if hdr[0] != 0x02 {
		t.Fatalf("association not accepted: PDU type %#x", hdr[0])
	}
	// P-DATA-TF that announces 4096 bytes and carries a few, with the
	// canary in them; then the client goes away.
	pdu := []byte{0x04, 0x00, 0, 0, 0x10, 0x00}
	pdu = append(pdu, 0, 0, 0x0f, 0xfc, 1, 0x02) // PDV: length 4092, context 1, data, last
	pdu = append(pdu, "\x10\x00\x10\x00PN\x20\x00"+canary...)
	c.Write(pdu)
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)

	evs := out.eventsWith(func(e map[string]any) bool { return e["kind"] == "session_end" })
	if len(evs) == 0 || evs[0]["outcome"] != "unmaskable" {
		t.Errorf("want a session_end event with outcome unmaskable, got %v", evs)
	}
	if got, _ := filepath.Glob(filepath.Join(recv, "*")); len(got) != 0 {
		t.Errorf("storescp stored %d objects from a truncated PDU", len(got))
	}
	noCanary(t, out)
}

// associateRQ builds an A-ASSOCIATE-RQ proposing one abstract syntax with
// one transfer syntax.
func associateRQ(called, calling, abstract, transfer string) []byte {
	item := func(typ byte, body []byte) []byte {
		b := []byte{typ, 0, 0, 0}
		binary.BigEndian.PutUint16(b[2:], uint16(len(body)))
		return append(b, body...)
	}
	ae := func(s string) []byte { return []byte(fmt.Sprintf("%-16s", s)) }
	var body []byte
	body = append(body, 0, 1, 0, 0)
	body = append(body, ae(called)...)
	body = append(body, ae(calling)...)
	body = append(body, make([]byte, 32)...)
	body = append(body, item(0x10, []byte("1.2.840.10008.3.1.1.1"))...)
	pc := []byte{1, 0, 0, 0}
	pc = append(pc, item(0x30, []byte(abstract))...)
	pc = append(pc, item(0x40, []byte(transfer))...)
	body = append(body, item(0x20, pc)...)
	maxLen := make([]byte, 4)
	binary.BigEndian.PutUint32(maxLen, 16384)
	ui := item(0x51, maxLen)
	ui = append(ui, item(0x52, []byte("1.2.826.0.1.3680043.2.1125.1"))...)
	body = append(body, item(0x50, ui)...)
	pdu := []byte{0x01, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(pdu[2:], uint32(len(body)))
	return append(pdu, body...)
}
