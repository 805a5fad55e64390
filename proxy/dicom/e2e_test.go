package dicom

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/medgate/medgate/proxy/mask"
)

func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not installed (apt-get install dcmtk odil)", n)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listening on %s", addr)
}

// startProcess runs a program until the test ends.
func startProcess(t *testing.T, name string, args ...string) *bytes.Buffer {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	return &out
}

// startStoreSCP runs dcmtk's storescp, writing what it receives exactly as
// it arrived (+B) into a fresh directory.
func startStoreSCP(t *testing.T, extra ...string) (addr, dir string) {
	t.Helper()
	dir = t.TempDir()
	port := freePort(t)
	args := append([]string{"-aet", "STORESCP", "-od", dir, "-uf", "+xa", "+B"}, extra...)
	startProcess(t, "storescp", append(args, fmt.Sprint(port))...)
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	waitListening(t, addr)
	return addr, dir
}

// relay accepts associations on loopback and carries each to upstream
// through a pair of filters, toPeer masking with m.
type relay struct {
	addr    string
	mu      sync.Mutex
	objects []mask.Object
	errs    []error
	wg      sync.WaitGroup
}

func startRelay(t *testing.T, m *Masker, upstream string) *relay {
	t.Helper()
	return startRelayMasking(t, m, nil, upstream)
}

// startRelayMasking is startRelay with a masker for each direction: mUp
// for what the client sends upstream, mDown for the answers.
func startRelayMasking(t *testing.T, mUp, mDown *Masker, upstream string) *relay {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{addr: l.Addr().String()}
	t.Cleanup(func() { l.Close(); r.wg.Wait() })
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(c, mUp, mDown, upstream)
			}()
		}
	}()
	return r
}

func (r *relay) serve(c net.Conn, mUp, mDown *Masker, upstream string) {
	defer c.Close()
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		r.fail(err)
		return
	}
	defer up.Close()
	toPeer, fromPeer := NewAssociation().Filters(mUp, mDown)
	report := func(o mask.Object) {
		r.mu.Lock()
		r.objects = append(r.objects, o)
		r.mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := toPeer(up, c, c, report); err != nil {
			r.fail(err)
			c.Close()
			up.Close()
		}
		up.(*net.TCPConn).CloseWrite()
	}()
	go func() {
		defer wg.Done()
		if err := fromPeer(c, up, up, report); err != nil {
			r.fail(err)
			c.Close()
			up.Close()
		}
		c.(*net.TCPConn).CloseWrite()
	}()
	wg.Wait()
}

func (r *relay) fail(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

func (r *relay) results() ([]mask.Object, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]mask.Object(nil), r.objects...), append([]error(nil), r.errs...)
}

func runTool(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func receivedFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	for range 100 {
		files, _ = filepath.Glob(filepath.Join(dir, "*"))
		if len(files) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return files
}

func TestStoreSCUThroughRelay(t *testing.T) {
	requireTools(t, "storescu", "storescp", "dcmdump")
	m := basicMasker(t, mask.DICOMOptions{RetainLongitudinalModifiedDates: true})
	for _, f := range sampleFiles {
		if !f.store {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			in := readPart10(t, samplePath(f.name))
			scp, dir := startStoreSCP(t)
			r := startRelay(t, m, scp)
			host, port, _ := net.SplitHostPort(r.addr)
			out, err := runTool(t, "storescu", "-aec", "STORESCP", f.propose, host, port, samplePath(f.name))
			if err != nil {
				t.Fatalf("storescu: %v\n%s", err, out)
			}
			files := receivedFiles(t, dir)
			if len(files) != 1 {
				t.Fatalf("storescp received %d files", len(files))
			}
			got := readPart10(t, files[0])
			if got.ts != in.ts {
				t.Fatalf("arrived in %s, sent in %s", got.ts, in.ts)
			}
			s, _ := syntaxOf(in.ts)
			checkMasked(t, m, in.dataset, got.dataset, s, true)
			objs, errs := r.results()
			if len(errs) > 0 {
				t.Fatalf("relay: %v", errs)
			}
			if len(objs) != 1 {
				t.Fatalf("%d objects reported", len(objs))
			}
			sum := sha256.Sum256(got.dataset)
			if objs[0].SHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("reported digest differs from the stored data set")
			}
			if objs[0].Operation != "C-STORE-RQ" || objs[0].Profile != mask.DICOMBasic {
				t.Errorf("reported %+v", objs[0])
			}
			// dcmdump reads it, and sees what a user would check.
			dump, err := runTool(t, "dcmdump", "-q", "+P", "PatientIdentityRemoved", "+P", "PatientID", "+P", "SOPInstanceUID", files[0])
			if err != nil {
				t.Fatalf("dcmdump: %v\n%s", err, dump)
			}
			if !strings.Contains(dump, "[YES]") {
				t.Errorf("dcmdump shows no Patient Identity Removed YES:\n%s", dump)
			}
			before, _ := parseTree(in.dataset, s)
			if n := find(before, tagSOPInstance); n != nil && !strings.Contains(dump, m.keyer.UID(trimValue(n.value))) {
				t.Errorf("dcmdump shows no remapped SOP Instance UID:\n%s", dump)
			}
			if n := find(before, tagPatientName); n != nil && len(trimValue(n.value)) > 3 {
				raw, _ := os.ReadFile(files[0])
				if bytes.Contains(raw, []byte(trimValue(n.value))) {
					t.Errorf("the patient's name arrived")
				}
			}
		})
	}
}

// TestStoreSCUSeveralFiles sends many objects over one association with
// small PDUs both ways, so data sets span many PDVs and PDUs.
func TestStoreSCUSeveralFiles(t *testing.T) {
	requireTools(t, "storescu", "storescp")
	m := basicMasker(t, mask.DICOMOptions{})
	scp, dir := startStoreSCP(t, "-pdu", "4096")
	r := startRelay(t, m, scp)
	host, port, _ := net.SplitHostPort(r.addr)
	files := []string{samplePath("CT_small.dcm"), samplePath("MR_small.dcm"), samplePath("rtdose.dcm"), samplePath("waveform_ecg.dcm")}
	out, err := runTool(t, "storescu", append([]string{"-aec", "STORESCP", "-pdu", "4096", host, port}, files...)...)
	if err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	objs, errs := r.results()
	if len(errs) > 0 {
		t.Fatalf("relay: %v", errs)
	}
	if len(objs) != len(files) {
		t.Fatalf("%d objects reported, want %d", len(objs), len(files))
	}
	got, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(got) != len(files) {
		t.Fatalf("storescp received %d files", len(got))
	}
}

func TestDeflatedRefused(t *testing.T) {
	requireTools(t, "storescu", "storescp")
	m := basicMasker(t, mask.DICOMOptions{})
	scp, dir := startStoreSCP(t)
	r := startRelay(t, m, scp)
	host, port, _ := net.SplitHostPort(r.addr)
	out, err := runTool(t, "storescu", "-aec", "STORESCP", "-xd", "-R", host, port, samplePath("image_dfl.dcm"))
	if err == nil && !strings.Contains(out, "bort") {
		t.Errorf("storescu did not see the association aborted:\n%s", out)
	}
	var errs []error
	for range 100 {
		if _, errs = r.results(); len(errs) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var e *Error
	if len(errs) == 0 || !errors.As(errs[0], &e) || e.Reason != ReasonTransferSyntax || !errors.Is(errs[0], mask.ErrUnmaskable) {
		t.Fatalf("relay errors %v, want an unsupported transfer syntax", errs)
	}
	time.Sleep(100 * time.Millisecond)
	if got, _ := filepath.Glob(filepath.Join(dir, "*")); len(got) != 0 {
		t.Errorf("storescp stored %v", got)
	}
}

// TestOdilStoreThroughRelay sends with odil, which packs PDUs its own
// way: the command and the first data set fragment in one PDU, fragments
// filling the maximum length exactly.
func TestOdilStoreThroughRelay(t *testing.T) {
	requireTools(t, "odil", "storescp")
	m := basicMasker(t, mask.DICOMOptions{})
	for _, name := range []string{"CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "rtdose.dcm", "waveform_ecg.dcm", "MR_small_RLE.dcm"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			in := readPart10(t, samplePath(name))
			scp, dir := startStoreSCP(t, "-pdu", "8192")
			r := startRelay(t, m, scp)
			host, port, _ := net.SplitHostPort(r.addr)
			out, err := runTool(t, "odil", "store", host, port, "ODIL", "STORESCP", samplePath(name))
			if err != nil {
				t.Fatalf("odil store: %v\n%s", err, out)
			}
			if _, errs := r.results(); len(errs) > 0 {
				t.Fatalf("relay: %v", errs)
			}
			files := receivedFiles(t, dir)
			if len(files) != 1 {
				t.Fatalf("storescp received %d files\n%s", len(files), out)
			}
			got := readPart10(t, files[0])
			sin, _ := syntaxOf(in.ts)
			sout, ok := syntaxOf(got.ts)
			if !ok {
				t.Fatalf("arrived in %s", got.ts)
			}
			// odil re-encodes what it sends (numbers, and the transfer
			// syntax it negotiated): kept values need only be there, and the
			// pixel data is byte-identical when the syntax is the same.
			checkMaskedAs(t, m, in.dataset, sin, got.dataset, sout, true, false)
			a, _ := parseTree(got.dataset, sout)
			b, _ := parseTree(in.dataset, sin)
			if pa, pb := find(a, tagPixelData), find(b, tagPixelData); got.ts == in.ts && pb != nil && (pa == nil || !bytes.Equal(pa.value, pb.value) || !equalFrags(pa.frags, pb.frags)) {
				t.Errorf("pixel data changed")
			}
		})
	}
}

// TestFindSCUThroughRelay queries dcmtk's archive, dcmqrscp, through a
// relay that masks the archive's answers: identifiers arrive as
// pseudonyms and remapped UIDs, names and dates do not arrive.
func TestFindSCUThroughRelay(t *testing.T) {
	requireTools(t, "dcmqrscp", "findscu", "storescu", "dcmdump")
	names := []string{"CT_small.dcm", "MR_small.dcm", "rtdose.dcm"}
	archive := startArchive(t, names)
	m := basicMasker(t, mask.DICOMOptions{RetainLongitudinalModifiedDates: true})
	r := startRelayMasking(t, nil, m, archive)
	host, rport, _ := net.SplitHostPort(r.addr)
	out := t.TempDir()
	res, err := runTool(t, "findscu", "-S", "-aec", "ARCHIVE", "-X", "-od", out,
		"-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName", "-k", "PatientID", "-k", "StudyInstanceUID",
		"-k", "StudyDate", "-k", "PatientBirthDate", host, rport)
	if err != nil {
		t.Fatalf("findscu: %v\n%s", err, res)
	}
	rsps, _ := filepath.Glob(filepath.Join(out, "rsp*.dcm"))
	if len(rsps) != len(names) {
		t.Fatalf("%d responses, want %d\n%s", len(rsps), len(names), res)
	}
	want := map[string]bool{}
	for _, n := range names {
		p := readPart10(t, samplePath(n))
		s, _ := syntaxOf(p.ts)
		ds, _ := parseTree(p.dataset, s)
		id := trimValue(find(ds, tagPatientID).value)
		want[m.keyer.Token("patient-id", id)+" "+m.keyer.UID(trimValue(find(ds, tagStudyUID).value))] = true
	}
	for _, f := range rsps {
		dump, err := runTool(t, "dcmdump", "-q", f)
		if err != nil {
			t.Fatalf("dcmdump: %v", err)
		}
		p := readPart10(t, f)
		s, _ := syntaxOf(p.ts)
		ds, err := parseTree(p.dataset, s)
		if err != nil {
			t.Fatal(err)
		}
		key := trimValue(find(ds, tagPatientID).value) + " " + trimValue(find(ds, tagStudyUID).value)
		if !want[key] {
			t.Errorf("response %s: patient ID and study UID are not the pseudonym and remapped UID of a stored study\n%s", f, dump)
		}
		for _, leak := range []string{"CompressedSamples", "Lastname", "1.3.6.1.4.1.5962"} {
			if strings.Contains(dump, leak) {
				t.Errorf("response carries %q:\n%s", leak, dump)
			}
		}
		if n := find(ds, 0x00100030); n != nil && len(n.value) != 0 {
			t.Errorf("birth date arrived")
		}
	}
	objs, errs := r.results()
	if len(errs) > 0 {
		t.Fatalf("relay: %v", errs)
	}
	if len(objs) != len(names) {
		t.Errorf("%d objects reported, want %d", len(objs), len(names))
	}
}

// startArchive runs dcmtk's dcmqrscp as an archive called ARCHIVE and
// stores the sample files into it directly.
func startArchive(t *testing.T, names []string) string {
	t.Helper()
	dir := t.TempDir()
	db := filepath.Join(dir, "db")
	os.Mkdir(db, 0o755)
	port := freePort(t)
	cfg := fmt.Sprintf(`NetworkTCPPort = %d
MaxPDUSize = 16384
MaxAssociations = 16
HostTable BEGIN
HostTable END
VendorTable BEGIN
VendorTable END
AETable BEGIN
ARCHIVE %s RW (200, 1024mb) ANY
AETable END
`, port, db)
	cfgPath := filepath.Join(dir, "dcmqrscp.cfg")
	os.WriteFile(cfgPath, []byte(cfg), 0o644)
	startProcess(t, "dcmqrscp", "-c", cfgPath)
	archive := fmt.Sprintf("127.0.0.1:%d", port)
	waitListening(t, archive)
	var files []string
	for _, n := range names {
		files = append(files, samplePath(n))
	}
	if out, err := runTool(t, "storescu", append([]string{"-aec", "ARCHIVE", "127.0.0.1", fmt.Sprint(port)}, files...)...); err != nil {
		t.Fatalf("storescu into the archive: %v\n%s", err, out)
	}

	return archive
}

// TestRetrieveByPseudonym: a peer that only ever saw the archive's masked
// answers queries by patient pseudonym and retrieves with C-GET by a
// remapped study UID; the archive's relay translates both back, and what
// the peer receives is masked.
func TestRetrieveByPseudonym(t *testing.T) {
	requireTools(t, "dcmqrscp", "findscu", "getscu", "storescu", "dcmdump")
	archive := startArchive(t, []string{"CT_small.dcm", "MR_small.dcm", "rtdose.dcm"})
	m := basicMasker(t, mask.DICOMOptions{})
	ix := NewIndex(0)
	r := startRelayMasking(t, NewRestorer(ix), m.WithIndex(ix), archive)
	host, port, _ := net.SplitHostPort(r.addr)
	ct := readPart10(t, samplePath("CT_small.dcm"))
	ctDS, _ := parseTree(ct.dataset, explicitLE)
	pid := trimValue(find(ctDS, tagPatientID).value)
	study := trimValue(find(ctDS, tagStudyUID).value)
	token, remapped := m.keyer.Token("patient-id", pid), m.keyer.UID(study)

	// The peer learns the pseudonyms from a first query.
	if out, err := runTool(t, "findscu", "-S", "-aec", "ARCHIVE", "-k", "QueryRetrieveLevel=STUDY",
		"-k", "PatientID", "-k", "StudyInstanceUID", host, port); err != nil {
		t.Fatalf("findscu: %v\n%s", err, out)
	}
	// A query by pseudonym finds that patient's study, masked.
	out := t.TempDir()
	res, err := runTool(t, "findscu", "-S", "-aec", "ARCHIVE", "-X", "-od", out, "-k", "QueryRetrieveLevel=STUDY",
		"-k", "PatientID="+token, "-k", "StudyInstanceUID", "-k", "PatientName", host, port)
	if err != nil {
		t.Fatalf("findscu: %v\n%s", err, res)
	}
	rsps, _ := filepath.Glob(filepath.Join(out, "rsp*.dcm"))
	if len(rsps) != 1 {
		t.Fatalf("query by pseudonym found %d studies, want 1\n%s", len(rsps), res)
	}
	p := readPart10(t, rsps[0])
	ds, _ := parseTree(p.dataset, explicitLE)
	if got := trimValue(find(ds, tagStudyUID).value); got != remapped {
		t.Errorf("study UID %q, want the remapped %q", got, remapped)
	}
	if got := trimValue(find(ds, tagPatientID).value); got != token {
		t.Errorf("patient ID %q, want the pseudonym", got)
	}
	// C-GET by the remapped study UID delivers the masked object.
	got := t.TempDir()
	res, err = runTool(t, "getscu", "-S", "-aec", "ARCHIVE", "-od", got, "-k", "QueryRetrieveLevel=STUDY",
		"-k", "StudyInstanceUID="+remapped, host, port)
	if err != nil {
		t.Fatalf("getscu: %v\n%s", err, res)
	}
	files, _ := filepath.Glob(filepath.Join(got, "*"))
	if len(files) != 1 {
		t.Fatalf("C-GET delivered %d objects, want 1\n%s", len(files), res)
	}
	recv := readPart10(t, files[0])
	s, _ := syntaxOf(recv.ts)
	rds, err := parseTree(recv.dataset, s)
	if err != nil {
		t.Fatal(err)
	}
	if trimValue(find(rds, tagStudyUID).value) != remapped || trimValue(find(rds, tagPatientID).value) != token ||
		trimValue(find(rds, tagIdentityRem).value) != "YES" {
		t.Errorf("retrieved object is not masked")
	}
	raw, _ := os.ReadFile(files[0])
	if bytes.Contains(raw, []byte(study)) || bytes.Contains(raw, []byte("CompressedSamples")) {
		t.Errorf("retrieved object carries original identifiers")
	}
	if _, errs := r.results(); len(errs) > 0 {
		t.Fatalf("relay: %v", errs)
	}
}
