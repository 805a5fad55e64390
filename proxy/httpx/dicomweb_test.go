package httpx

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/medgate/medgate/proxy/dicom"
	"github.com/medgate/medgate/proxy/mask"
)

const samples = "/usr/lib/python3/dist-packages/pydicom/data/test_files"

func basicCodec(tb testing.TB, ix *dicom.Index) (*Codec, *dicom.Masker) {
	tb.Helper()
	p, _ := mask.Builtin(mask.DICOMBasic)
	env := mask.Env{Keyer: testKeyer(tb)}
	c, err := New(p, env, Config{Index: ix})
	if err != nil {
		tb.Fatal(err)
	}
	m, err := dicom.NewMasker(p, env)
	if err != nil {
		tb.Fatal(err)
	}
	return c, m
}

// orthancResponse reads a captured Orthanc response: its head and body.
func orthancResponse(tb testing.TB, name string) (*http.Response, []byte) {
	tb.Helper()
	raw, err := os.ReadFile("testdata/orthanc/" + name)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		tb.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp, body
}

// parts splits a multipart body with the standard library's reader.
func parts(tb testing.TB, ct string, body []byte, masked bool) (types []string, contents [][]byte) {
	tb.Helper()
	_, params, err := mime.ParseMediaType(ct)
	if err != nil {
		tb.Fatal(err)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return
		}
		if err != nil {
			tb.Fatal(err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			tb.Fatal(err)
		}
		types = append(types, p.Header.Get("Content-Type"))
		contents = append(contents, b)
		if masked && len(p.Header) != 1 {
			tb.Errorf("part fields %v, want Content-Type alone", p.Header)
		}
	}
}

// serverExchange runs one request and one response through Server's
// filters and returns what the server and the client got, the objects
// reported and the response filter's error.
func serverExchange(c *Codec, req, resp string) (upstream, client string, objs []mask.Object, err error) {
	requests, responses := c.Server()
	var up, down, back bytes.Buffer
	report := func(o mask.Object) { objs = append(objs, o) }
	if err := requests(&up, strings.NewReader(req), &back, report); err != nil {
		return "", "", nil, err
	}
	err = responses(&down, strings.NewReader(resp), io.Discard, report)
	return up.String(), down.String(), objs, err
}

func TestWADOResponseMasked(t *testing.T) {
	ix := dicom.NewIndex(0)
	c, m := basicCodec(t, ix)
	resp, body := orthancResponse(t, "wado.http")
	ct := resp.Header.Get("Content-Type")
	_, inParts := parts(t, ct, body, false)
	raw := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", ct, len(body), body)
	_, client, objs, err := serverExchange(c, "GET /dicom-web/studies/1.2.3 HTTP/1.1\r\nHost: h\r\n\r\n", raw)
	if err != nil {
		t.Fatal(err)
	}
	got, err := http.ReadResponse(bufio.NewReader(strings.NewReader(client)), nil)
	if err != nil {
		t.Fatal(err)
	}
	outBody, err := io.ReadAll(got.Body)
	if err != nil {
		t.Fatal(err)
	}
	mt1, p1, _ := mime.ParseMediaType(ct)
	mt2, p2, _ := mime.ParseMediaType(got.Header.Get("Content-Type"))
	if mt1 != mt2 || p1["boundary"] != p2["boundary"] || p1["type"] != p2["type"] {
		t.Errorf("Content-Type %q, want %q (the same boundary)", got.Header.Get("Content-Type"), ct)
	}
	types, outParts := parts(t, got.Header.Get("Content-Type"), outBody, true)
	if len(outParts) != len(inParts) {
		t.Fatalf("%d parts, want %d", len(outParts), len(inParts))
	}
	for i, in := range inParts {
		var want bytes.Buffer
		if _, err := m.MaskPart10(&want, bytes.NewReader(in)); err != nil {
			t.Fatal(err)
		}
		if types[i] != "application/dicom" || !bytes.Equal(outParts[i], want.Bytes()) {
			t.Errorf("part %d (%s) is not the masked file", i, types[i])
		}
	}
	if len(objs) != len(inParts) || objs[0].Operation != "GET /dicom-web/studies/{study}" || objs[0].Protocol != "http" ||
		objs[0].StudyUID == "" || objs[0].PatientPseudonym == "" || len(objs[0].SHA256) != 64 {
		t.Errorf("objects reported: %+v", objs)
	}
	// The index now translates the remapped study UID back in requests.
	up, _, _, _ := serverExchange(c, "GET /dicom-web/studies/"+objs[0].StudyUID+"/metadata?StudyInstanceUID="+objs[0].StudyUID+"&PatientID="+objs[0].PatientPseudonym+" HTTP/1.1\r\nHost: h\r\n\r\n", "")
	if strings.Contains(up, objs[0].StudyUID) || strings.Contains(up, objs[0].PatientPseudonym) {
		t.Errorf("request to the server not restored: %q", strings.SplitN(up, "\r\n", 2)[0])
	}
}

func TestQIDOResponseMasked(t *testing.T) {
	c, m := basicCodec(t, nil)
	qido, err := os.ReadFile("testdata/orthanc/qido.json")
	if err != nil {
		t.Fatal(err)
	}
	raw := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: %d\r\n\r\n%s", len(qido), qido)
	_, client, objs, err := serverExchange(c, "GET /dicom-web/studies?PatientID=4MR1 HTTP/1.1\r\nHost: h\r\n\r\n", raw)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if _, err := m.MaskJSON(&want, bytes.NewReader(qido)); err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(client, "\r\n\r\n")
	if body != want.String() {
		t.Errorf("body is not the masked DICOM JSON:\n%s", body)
	}
	if !strings.Contains(client, fmt.Sprintf("Content-Length: %d\r\n", want.Len())) {
		t.Errorf("a small body should have its Content-Length recomputed: %q", strings.SplitN(client, "\r\n\r\n", 2)[0])
	}
	if len(objs) != 1 || objs[0].Operation != "GET /dicom-web/studies" || objs[0].PatientPseudonym == "" {
		t.Errorf("objects: %+v", objs)
	}
}

func TestDICOMwebRefused(t *testing.T) {
	c, _ := basicCodec(t, nil)
	resp, body := orthancResponse(t, "frames.http")
	frames := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", resp.Header.Get("Content-Type"), len(body), body)
	dcm, err := os.ReadFile(samples + "/CT_small.dcm")
	if err != nil {
		t.Skip(err)
	}
	mixed := "--b\r\nContent-Type: application/dicom\r\n\r\n" + string(dcm) + "\r\n--b\r\nContent-Type: image/jpeg\r\n\r\nJFIF\r\n--b--\r\n"
	deflated, _ := os.ReadFile(samples + "/image_dfl.dcm")
	tests := []struct{ name, resp string }{
		{"frames of octet-stream", frames},
		{"rendered image", "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n\r\nJFIF"},
		{"a jpeg part after a dicom one", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: multipart/related; type=\"application/dicom\"; boundary=b\r\nContent-Length: %d\r\n\r\n%s", len(mixed), mixed)},
		{"FHIR JSON on a profile without FHIR rules", "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 2\r\n\r\n{}"},
		{"no boundary", "HTTP/1.1 200 OK\r\nContent-Type: multipart/related\r\nContent-Length: 2\r\n\r\n--"},
		{"base64 part", "HTTP/1.1 200 OK\r\nContent-Type: multipart/related; boundary=b\r\nContent-Length: 77\r\n\r\n--b\r\nContent-Type: application/dicom\r\nContent-Transfer-Encoding: base64\r\n\r\nAA==\r\n--b--\r\n"},
		{"deflated object", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/dicom\r\nContent-Length: %d\r\n\r\n%s", len(deflated), deflated)},
		{"truncated multipart", "HTTP/1.1 200 OK\r\nContent-Type: multipart/related; boundary=b\r\nContent-Length: 41\r\n\r\n--b\r\nContent-Type: application/dicom\r\n\r\nDI"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, client, objs, err := serverExchange(c, "GET /dicom-web/studies/1.2.3 HTTP/1.1\r\nHost: h\r\n\r\n", tt.resp)
			if !errors.Is(err, mask.ErrUnmaskable) {
				t.Fatalf("err = %v, want unmaskable", err)
			}
			if !strings.HasPrefix(client, "HTTP/1.1 502 ") || strings.Contains(client, "JFIF") || strings.Contains(client, "DICM") {
				t.Errorf("the client got %q", client[:min(len(client), 200)])
			}
			if len(objs) != 0 {
				t.Errorf("objects reported for a refused message: %+v", objs)
			}
		})
	}
}

func TestSTOWRequestMasked(t *testing.T) {
	c, m := basicCodec(t, nil)
	dcm, err := os.ReadFile(samples + "/CT_small.dcm")
	if err != nil {
		t.Skip(err)
	}
	const boundary = "stow-boundary"
	// Three objects: more than the codec holds before it commits to a
	// chunked body.
	body := "preamble"
	for range 3 {
		body += "\r\n--" + boundary + "\r\nContent-Type: application/dicom\r\nContent-Length: " + fmt.Sprint(len(dcm)) +
			"\r\nContent-Location: file:///CANARY\r\n\r\n" + string(dcm)
	}
	body += "\r\n--" + boundary + "--\r\nepilogue"
	req := fmt.Sprintf("POST /dicom-web/studies HTTP/1.1\r\nHost: h\r\nContent-Type: multipart/related; type=\"application/dicom\"; boundary=%s\r\nContent-Length: %d\r\n\r\n%s", boundary, len(body), body)
	requests, _ := c.Client()
	var up, back bytes.Buffer
	var objs []mask.Object
	if err := requests(&up, strings.NewReader(req), &back, func(o mask.Object) { objs = append(objs, o) }); err != nil {
		t.Fatal(err)
	}
	got, err := http.ReadRequest(bufio.NewReader(&up))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(got.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got.ContentLength != -1 || len(got.TransferEncoding) != 1 {
		t.Errorf("a masked body larger than the window should go chunked: %d %v", got.ContentLength, got.TransferEncoding)
	}
	types, contents := parts(t, got.Header.Get("Content-Type"), b, true)
	var want bytes.Buffer
	if _, err := m.MaskPart10(&want, bytes.NewReader(dcm)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"application/dicom", "application/dicom", "application/dicom"}, types); diff != "" {
		t.Errorf("part types (-want +got):\n%s", diff)
	}
	for i, c := range contents {
		if !bytes.Equal(c, want.Bytes()) {
			t.Errorf("part %d is not the masked file", i)
		}
	}
	for _, s := range []string{"preamble", "epilogue", "CANARY"} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("%s went on", s)
		}
	}
	if len(objs) != 3 || objs[0].Operation != "POST /dicom-web/studies" {
		t.Errorf("objects: %+v", objs)
	}

	// A query on attributes, or a path UID that is not one, is refused.
	for _, target := range []string{"/dicom-web/studies?PatientID=4711", "/dicom-web/studies/abc/series", "/wado?requestType=WADO&studyUID=1.2"} {
		requests, _ := c.Client()
		var up, back bytes.Buffer
		err := requests(&up, strings.NewReader("GET "+target+" HTTP/1.1\r\nHost: h\r\n\r\n"), &back, nil)
		if !errors.Is(err, mask.ErrUnmaskable) || up.Len() != 0 || !strings.HasPrefix(back.String(), "HTTP/1.1 502") {
			t.Errorf("%s: err %v, sent %q, answered %q", target, err, up.String(), back.String())
		}
	}
	requests, _ = c.Client()
	up.Reset()
	if err := requests(&up, strings.NewReader("GET /dicom-web/studies/1.2.3/series?limit=10 HTTP/1.1\r\nHost: h\r\n\r\n"), io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	if want := "GET /dicom-web/studies/" + testKeyer(t).UID("1.2.3") + "/series?limit=10 "; !strings.HasPrefix(up.String(), want) {
		t.Errorf("request line %q, want %q", strings.SplitN(up.String(), "\r\n", 2)[0], want)
	}
}

// readAll reads every part of a multipart body with the codec's reader.
func readAll(body []byte, boundary string) ([][]field, [][]byte, error) {
	mr := newMultipartReader(bytes.NewReader(body), boundary, 1<<10)
	var heads [][]field
	var contents [][]byte
	for {
		f, p, err := mr.next()
		if err == io.EOF {
			return heads, contents, nil
		}
		if err != nil {
			return heads, contents, err
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return heads, contents, err
		}
		heads, contents = append(heads, f), append(contents, b)
	}
}

func TestMultipartReader(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string
		err        bool
	}{
		{name: "two parts", body: "--b\r\nA: 1\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\n", want: []string{"one", "two"}},
		{name: "preamble, padding and epilogue", body: "pre\r\n--b  \r\n\r\none\r\n--b-- \r\nepi", want: []string{"one"}},
		{name: "empty part", body: "--b\r\n\r\n\r\n--b--", want: []string{""}},
		{name: "no parts", body: "--b--\r\n", want: nil},
		{name: "boundary text inside content", body: "--b\r\n\r\nx--b\r\n-b\r\n--b--\r\n", want: []string{"x--b\r\n-b"}},
		{name: "boundary followed by more", body: "--b\r\n\r\nx\r\n--bc\r\n--b--\r\n", err: true},
		{name: "LF-only delimiters", body: "--b\n\nx\n--b--\n", err: true},
		{name: "no close delimiter", body: "--b\r\n\r\nx", err: true},
		{name: "no delimiter at all", body: "nothing", err: true},
		{name: "folded head", body: "--b\r\nA: 1\r\n 2\r\n\r\nx\r\n--b--", err: true},
		{name: "head too large", body: "--b\r\nA: " + strings.Repeat("x", 2000) + "\r\n\r\nx\r\n--b--", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, contents, err := readAll([]byte(tt.body), "b")
			if tt.err {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range contents {
				got = append(got, string(c))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestGuardWriter(t *testing.T) {
	for _, tt := range []struct {
		writes []string
		ok     bool
	}{
		{[]string{"abc", "--b"}, true},
		{[]string{"--bx"}, false},
		{[]string{"x\r", "\n-", "-b"}, false},
		{[]string{"x\n--", "b"}, false},
		{[]string{"x\n-", "x-b"}, true},
	} {
		var out bytes.Buffer
		g := newGuardWriter(&out, "b")
		var err error
		for _, w := range tt.writes {
			if _, err = g.Write([]byte(w)); err != nil {
				break
			}
		}
		if (err == nil) != tt.ok {
			t.Errorf("%q: err %v", tt.writes, err)
		}
	}
}

// FuzzMultipartReader checks the multipart reader against the standard
// library's on what both accept, and that re-emitting what it read with
// the same boundary reads back the same.
func FuzzMultipartReader(f *testing.F) {
	// Orthanc's bodies, each part cut to its first KiB: large inputs
	// slow the fuzzer down to a crawl.
	for _, name := range []string{"wado.http", "frames.http"} {
		resp, body := orthancResponse(f, name)
		_, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		b := params["boundary"]
		heads, contents, err := readAll(body, b)
		if err != nil {
			f.Fatal(err)
		}
		var seed bytes.Buffer
		for i, c := range contents {
			seed.WriteString("--" + b + "\r\n")
			for _, fl := range heads[i] {
				seed.WriteString(fl.name + ": " + fl.value + "\r\n")
			}
			seed.WriteString("\r\n")
			seed.Write(c[:min(len(c), 1<<10)])
			seed.WriteString("\r\n")
		}
		seed.WriteString("--" + b + "--\r\n")
		f.Add(b, seed.Bytes())
	}
	f.Add("b", []byte("pre\r\n--b\r\nA: 1\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\nepi"))
	f.Fuzz(func(t *testing.T, boundary string, body []byte) {
		if !validBoundary(boundary) {
			return
		}
		heads, contents, err := readAll(body, boundary)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		std := multipart.NewReader(bytes.NewReader(body), boundary)
		for i := range contents {
			p, err := std.NextRawPart()
			if err != nil {
				break // the standard reader is laxer and stricter in places
			}
			b, err := io.ReadAll(p)
			if err == nil && !bytes.Equal(b, contents[i]) {
				t.Fatalf("part %d: %q, the standard library reads %q", i, contents[i], b)
			}
		}
		var again bytes.Buffer
		for i, c := range contents {
			if i > 0 {
				again.WriteString("\r\n")
			}
			again.WriteString("--" + boundary + "\r\n")
			for _, f := range heads[i] {
				again.WriteString(f.name + ": " + f.value + "\r\n")
			}
			again.WriteString("\r\n")
			g := newGuardWriter(&again, boundary)
			if _, err := g.Write(c); err != nil {
				return // content a lenient reader would split: never sent
			}
		}
		if len(contents) > 0 {
			again.WriteString("\r\n")
		}
		again.WriteString("--" + boundary + "--\r\n")
		_, contents2, err := readAll(again.Bytes(), boundary)
		if err != nil {
			t.Fatalf("re-emitted body does not read: %v", err)
		}
		if diff := cmp.Diff(contents, contents2); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

// FuzzDICOMwebResponses feeds responses to a DICOMweb request through the
// masked direction: no panic, refusals wrap mask.ErrUnmaskable, and what
// the client gets is an HTTP response.
func FuzzDICOMwebResponses(f *testing.F) {
	qido, _ := os.ReadFile("testdata/orthanc/qido.json")
	f.Add([]byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: %d\r\n\r\n%s", len(qido), qido)))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Type: multipart/related; type=\"application/dicom+json\"; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"4c\r\n--b\r\nContent-Type: application/dicom+json\r\n\r\n[{\"00100020\":{\"vr\":\"LO\",\"Value\":[\"1\"]}}]\r\n--b--\r\n\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Type: multipart/related; boundary=b\r\nContent-Length: 7\r\n\r\n--b--\r\n"))
	c, _ := basicCodec(f, dicom.NewIndex(16))
	f.Fuzz(func(t *testing.T, in []byte) {
		requests, responses := c.Server()
		if err := requests(io.Discard, strings.NewReader("GET /dicom-web/studies HTTP/1.1\r\nHost: h\r\n\r\n"), io.Discard, nil); err != nil {
			t.Fatal(err)
		}
		var client bytes.Buffer
		err := responses(&client, bytes.NewReader(in), io.Discard, nil)
		if err != nil && !errors.Is(err, mask.ErrUnmaskable) {
			t.Fatalf("error does not wrap ErrUnmaskable: %v", err)
		}
		if client.Len() > 0 && !bytes.HasPrefix(client.Bytes(), []byte("HTTP/1.")) {
			t.Fatalf("the client got %q", client.Bytes())
		}
	})
}
