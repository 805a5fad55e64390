package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/medgate/medgate/crypto/pseudonym"
	"github.com/medgate/medgate/proxy/mask"
)

func hipaaCodec(tb testing.TB) *Codec {
	p, _ := mask.Builtin(mask.HIPAASafeHarbor)
	c, err := New(p, mask.Env{Keyer: testKeyer(tb)}, Config{Now: func() time.Time { return time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// relay is the data path in small, in front of an HTTP server: requests
// pass through Server's requests filter, responses through its responses
// filter; an error of either aborts the connection.
type relay struct {
	ln      net.Listener
	mu      sync.Mutex
	objects []mask.Object
	errs    []error
	wg      sync.WaitGroup
}

func startRelay(tb testing.TB, c *Codec, upstream string) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &relay{ln: ln}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(c, conn, upstream)
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		r.wg.Wait()
	})
	return r
}

func (r *relay) serve(c *Codec, conn net.Conn, upstream string) {
	defer conn.Close()
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		r.record(nil, err)
		return
	}
	defer up.Close()
	requests, responses := c.Server()
	report := func(o mask.Object) { r.record(&o, nil) }
	done := make(chan error, 1)
	go func() {
		err := responses(conn, up, up, report)
		conn.Close() // the server is done: so is the client's connection
		done <- err
	}()
	reqErr := requests(up, conn, conn, report)
	if reqErr != nil {
		conn.Close()
		up.Close()
	} else {
		up.(*net.TCPConn).CloseWrite()
	}
	respErr := <-done
	for _, err := range []error{respErr, reqErr} {
		if errors.Is(err, mask.ErrUnmaskable) || err != nil && respErr == nil {
			r.record(nil, err)
		}
	}
}

func (r *relay) record(o *mask.Object, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if o != nil {
		r.objects = append(r.objects, *o)
	}
	if err != nil {
		r.errs = append(r.errs, err)
	}
}

func (r *relay) results() ([]mask.Object, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]mask.Object(nil), r.objects...), append([]error(nil), r.errs...)
}

func (r *relay) waitErrs(tb testing.TB, n int) []error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, errs := r.results()
		if len(errs) >= n || time.Now().After(deadline) {
			return errs
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fhirServer(tb testing.TB) (*httptest.Server, *sync.Map) {
	patient, _ := os.ReadFile("testdata/patient.json")
	bundle, _ := os.ReadFile("testdata/bundle.json")
	seen := &sync.Map{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.RemoteAddr, true)
		seen.Store("accept-encoding", r.Header.Get("Accept-Encoding"))
		switch r.URL.Path {
		case "/fhir/Patient/pat-canary-1":
			w.Header().Set("Content-Type", "application/fhir+json; charset=utf-8")
			w.Header().Set("Content-Length", fmt.Sprint(len(patient)))
			w.Write(patient)
		case "/fhir/Patient":
			if r.Method == http.MethodPost {
				body, _ := io.ReadAll(r.Body)
				seen.Store("posted", string(body))
				w.Header().Set("Location", "http://fhir.example/fhir/Patient/pat-canary-1/_history/1")
				w.WriteHeader(http.StatusCreated)
				return
			}
			w.Header().Set("Content-Type", "application/fhir+json")
			w.Write(bundle)
		case "/fhir/big":
			w.Header().Set("Content-Type", "application/json")
			entry := `{"resource":{"resourceType":"Patient","id":"pat-canary-%d","name":[{"family":"Canarywhistle"}],"birthDate":"1980-01-01"}}`
			io.WriteString(w, `{"resourceType":"Bundle","type":"searchset","entry":[`)
			for i := range 3000 {
				if i > 0 {
					io.WriteString(w, ",")
				}
				fmt.Fprintf(w, entry, i)
				if i%500 == 0 {
					w.(http.Flusher).Flush()
				}
			}
			io.WriteString(w, "]}")
		case "/fhir/text":
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "Zelda Canarywhistle")
		case "/fhir/invalid":
			w.Header().Set("Content-Type", "application/fhir+json")
			io.WriteString(w, `{"resourceType":"Patient","name":[{"family":"Canarywhistle"`)
		case "/fhir/gzip":
			w.Header().Set("Content-Type", "application/fhir+json")
			w.Header().Set("Content-Encoding", "gzip")
			io.WriteString(w, "\x1f\x8b not really")
		case "/fhir/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	}))
	tb.Cleanup(srv.Close)
	return srv, seen
}

func TestServerMasksResponses(t *testing.T) {
	srv, seen := fhirServer(t)
	rl := startRelay(t, hipaaCodec(t), srv.Listener.Addr().String())
	client := &http.Client{Timeout: 10 * time.Second}
	base := "http://" + rl.ln.Addr().String()
	k := testKeyer(t)
	id := k.Token(pseudonym.KindOther, "Patient/pat-canary-1")

	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: body: %v", path, err)
		}
		return resp, body
	}
	noCanary := func(what string, b []byte) {
		t.Helper()
		for _, c := range canaries {
			if bytes.Contains(b, []byte(c)) {
				t.Errorf("%s: %q crossed", what, c)
			}
		}
	}

	resp, body := get("/fhir/Patient/pat-canary-1")
	noCanary("read", body)
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(body)) || !bytes.Contains(body, []byte(`"id":"`+id+`"`)) {
		t.Errorf("read: %d, length %d of %d: %s", resp.StatusCode, resp.ContentLength, len(body), body)
	}
	resp, body = get("/fhir/Patient?name=Canarywhistle")
	noCanary("search", body)
	if !bytes.Contains(body, []byte(`"reference":"Patient/`+id+`"`)) {
		t.Errorf("search: %s", body)
	}
	resp, body = get("/fhir/big")
	noCanary("big", body)
	var big struct{ Entry []json.RawMessage }
	if err := json.Unmarshal(body, &big); err != nil || len(big.Entry) != 3000 || resp.ContentLength != -1 {
		t.Errorf("big: %v, %d entries, length %d", err, len(big.Entry), resp.ContentLength)
	}
	resp, _ = get("/fhir/empty")
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("empty: %d", resp.StatusCode)
	}
	head, err := client.Head(base + "/fhir/Patient/pat-canary-1")
	if err != nil || head.StatusCode != 200 {
		t.Errorf("HEAD: %v", err)
	}
	post, err := client.Post(base+"/fhir/Patient", "application/fhir+json", strings.NewReader(`{"resourceType":"Patient"}`))
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if loc := post.Header.Get("Location"); loc != "http://fhir.example/fhir/Patient/"+id+"/_history/1" {
		t.Errorf("Location %q", loc)
	}
	client.CloseIdleConnections()
	conns := 0
	seen.Range(func(k, _ any) bool {
		if strings.HasPrefix(k.(string), "127.") {
			conns++
		}
		return true
	})
	if conns != 1 {
		t.Errorf("%d connections to the server, want 1 (keep-alive)", conns)
	}
	if ae, _ := seen.Load("accept-encoding"); ae != "identity" {
		t.Errorf("Accept-Encoding at the server: %v", ae)
	}
	objs, errs := rl.results()
	if len(errs) != 0 {
		t.Errorf("relay errors: %v", errs)
	}
	ops := map[string]int{}
	for _, o := range objs {
		ops[o.Operation]++
		if o.Protocol != "http" || len(o.SHA256) != 64 || o.Profile != mask.HIPAASafeHarbor {
			t.Errorf("object %+v", o)
		}
		if o.Operation == "GET /fhir/Patient/{id}" && o.PatientPseudonym != id {
			t.Errorf("patient pseudonym %q", o.PatientPseudonym)
		}
	}
	for _, op := range []string{"GET /fhir/Patient/{id}", "GET /fhir/Patient", "GET /fhir/big", "POST /fhir/Patient", "HEAD /fhir/Patient/{id}"} {
		if ops[op] == 0 {
			t.Errorf("no event for %s (have %v)", op, ops)
		}
	}
}

func TestServerRefuses(t *testing.T) {
	srv, _ := fhirServer(t)
	for _, path := range []string{"/fhir/text", "/fhir/invalid", "/fhir/gzip"} {
		t.Run(path, func(t *testing.T) {
			rl := startRelay(t, hipaaCodec(t), srv.Listener.Addr().String())
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + rl.ln.Addr().String() + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway || bytes.Contains(body, []byte("Canarywhistle")) {
				t.Errorf("%d %s", resp.StatusCode, body)
			}
			errs := rl.waitErrs(t, 1)
			if len(errs) == 0 || !errors.Is(errs[0], mask.ErrUnmaskable) {
				t.Errorf("relay errors %v", errs)
			}
		})
	}
}

func TestMalformedHeads(t *testing.T) {
	tests := map[string]string{
		"smuggling":      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"bad length":     "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
		"two lengths":    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		"folded":         "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
		"not http":       "SSH-2.0-OpenSSH\r\n\r\n",
		"gzip te":        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"switch":         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
		"truncated body": "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{\"resourceType\":\"Patient\"}",
		"bad chunk":      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"head too large": "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", DefaultMaxHeaderBytes) + "\r\n\r\n",
		"truncated head": "HTTP/1.1 200 OK\r\nContent-Type: app",
	}
	for name, resp := range tests {
		t.Run(name, func(t *testing.T) {
			requests, responses := hipaaCodec(t).Server()
			var up bytes.Buffer
			if err := requests(&up, strings.NewReader("GET /x HTTP/1.1\r\nHost: h\r\n\r\n"), io.Discard, nil); err != nil {
				t.Fatal(err)
			}
			var client bytes.Buffer
			err := responses(&client, strings.NewReader(resp), io.Discard, nil)
			if !errors.Is(err, mask.ErrUnmaskable) {
				t.Fatalf("err = %v", err)
			}
			if got := client.String(); got != "" && !strings.HasPrefix(got, "HTTP/1.1 502 ") {
				t.Errorf("client got %q", got)
			}
		})
	}
}

func TestPathTemplate(t *testing.T) {
	tests := map[string]string{
		"/fhir/Patient/123":                    "/fhir/Patient/{id}",
		"/fhir/Patient/abc/_history/2?x=Zel":   "/fhir/Patient/{id}/_history/{vid}",
		"/fhir/Patient?name=Zelda":             "/fhir/Patient",
		"/fhir/R4/Observation/o-1/$everything": "/fhir/{id}/Observation/{id}/$everything",
		"/metadata":                            "/metadata",
		"http://h:8080/fhir/Patient/zz":        "/fhir/Patient/{id}",
		"/a%20b/Zelda Canarywhistle":           "/{id}/{id}",
	}
	for in, want := range tests {
		if got := pathTemplate(in); got != want {
			t.Errorf("pathTemplate(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzHTTPResponses(f *testing.F) {
	patient, _ := os.ReadFile("testdata/patient.json")
	f.Add([]byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: %d\r\n\r\n%s", len(patient), patient)))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\n{\"resourceType\":\"Patient\"}\r\n0\r\nX: y\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 200 OK\r\nContent-Type: application/fhir+json\r\n\r\n{\"resourceType\":\"Basic\",\"id\":\"1\"}"))
	c := hipaaCodec(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		requests, responses := c.Server()
		var up bytes.Buffer
		if err := requests(&up, strings.NewReader("GET /fhir/Patient/1 HTTP/1.1\r\nHost: h\r\n\r\n"), io.Discard, nil); err != nil {
			t.Fatal(err)
		}
		var client bytes.Buffer
		err := responses(&client, bytes.NewReader(in), io.Discard, nil)
		if err != nil && !errors.Is(err, mask.ErrUnmaskable) {
			t.Fatalf("error does not wrap ErrUnmaskable: %v", err)
		}
		if err == nil && client.Len() > 0 && !bytes.HasPrefix(client.Bytes(), []byte("HTTP/1.")) {
			t.Fatalf("the client got %q", client.Bytes())
		}
	})
}
