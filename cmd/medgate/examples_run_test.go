package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// exampleTimeout bounds one example's run.sh. Each does well under 30 s of
// work; the margin is for a loaded machine.
const exampleTimeout = 3 * time.Minute

// runExample runs examples/NAME/run.sh with the binary under test and
// returns its output. It fails the test when the script exits non-zero or
// runs out of time; every process the script started is gone when it
// returns.
func runExample(t *testing.T, name string) string {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	script, err := filepath.Abs(filepath.Join("../../examples", name, "run.sh"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), exampleTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = t.TempDir() // the script must work from any directory
	cmd.Env = append(os.Environ(), "MEDGATE_BIN="+medgateBin, "TMPDIR="+t.TempDir())
	// The script and everything it starts form one process group. On
	// timeout the group gets SIGTERM, so the script's trap stops what it
	// started, then SIGKILL if that does not end it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // nothing outlives the test
	}
	t.Logf("%s/run.sh took %s", name, time.Since(start).Round(100*time.Millisecond))
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("%s/run.sh did not finish within %s:\n%s", name, exampleTimeout, out.String())
	}
	if err != nil {
		t.Fatalf("%s/run.sh: %v\n%s", name, err, out.String())
	}
	return out.String()
}

// needPrograms skips the test, naming the package to install, when a
// program an example runs is missing.
func needPrograms(t *testing.T, pkgs map[string]string) {
	t.Helper()
	for prog, pkg := range pkgs {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("%s not installed (apt-get install %s)", prog, pkg)
		}
	}
}

// wantLines fails the test for each wanted line that is not in the
// output. A wanted line is a list of fragments separated by " ... " that
// must appear in one line of the output, in that order.
func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	for _, w := range want {
		if !slices.ContainsFunc(lines, func(l string) bool { return hasInOrder(l, strings.Split(w, " ... ")) }) {
			t.Errorf("no line of the output has %q", w)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

func hasInOrder(s string, parts []string) bool {
	for _, p := range parts {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return true
}

func TestExampleHL7Feed(t *testing.T) {
	needPrograms(t, map[string]string{"mllp_send": "python3-hl7"})
	if err := exec.Command("/usr/bin/python3", "-c", "import hl7.mllp").Run(); err != nil {
		t.Skip("python3-hl7 not importable by /usr/bin/python3 (apt-get install python3-hl7)")
	}
	out := runExample(t, "hl7-feed")
	wantLines(t, out,
		"ack: MSA|AA|MERCY-0001",
		"US PID|1||MRN-204518",
		"IN (segment removed)", // NK1
		"IN DG1|1||I21.4^Non-ST elevation myocardial infarction",
		`"profile":"adt-to-reading-partner"`,
		"OK: the ADT^A01 crossed de-identified",
	)
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "IN ") && strings.Contains(line, "Marchetti") {
			t.Errorf("the received message shows the patient's name: %s", line)
		}
	}
}

func TestExampleEHRFHIR(t *testing.T) {
	needPrograms(t, map[string]string{"node": "nodejs npm", "curl": "curl"})
	if _, err := os.Stat("../../proxy/httpx/testdata/node/node_modules/@medplum/fhir-router"); err != nil {
		t.Skip("Medplum not installed (cd proxy/httpx/testdata/node && npm ci; .ci/install-deps does it)")
	}
	out := runExample(t, "ehr-fhir")
	wantLines(t, out,
		"name[0].family ... Marchetti ... -",
		"birthDate ... 1961-07-23 ... 1961",
		"entry[1].resource.code.coding[0].code ... I21.4 ... I21.4",
		"(EU): allow",
		"(US): de-identified with registry-study, legal basis scc:",
		"OK: the ward read the records whole; the research partner read them de-identified",
	)
}

func TestExampleCrossborderPACS(t *testing.T) {
	if _, err := exec.LookPath("Orthanc"); err != nil {
		if _, err := os.Stat("/usr/sbin/Orthanc"); err != nil {
			t.Skip("Orthanc not installed (apt-get install orthanc)")
		}
	}
	needPrograms(t, map[string]string{
		"storescu": "dcmtk", "storescp": "dcmtk", "findscu": "dcmtk", "movescu": "dcmtk",
		"dcmdump": "dcmtk", "dcmodify": "dcmtk", "curl": "curl",
	})
	if _, err := os.Stat("/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm"); err != nil {
		t.Skip("pydicom sample files not installed (apt-get install python3-pydicom)")
	}
	// As root where network namespaces work (CI), the hospital and the lab
	// must be two hosts; loopback is the fallback, not a silent default.
	mode := "== Mode: loopback"
	if os.Geteuid() == 0 && os.Getenv("MEDGATE_EXAMPLE_LOOPBACK") != "1" && netnsWorks() {
		mode = "== Mode: two hosts in network namespaces"
	}
	out := runExample(t, "crossborder-pacs")
	wantLines(t, out,
		mode,
		"PatientName=Marchetti^Zebulon PatientID=OSE-0042177",
		"spiffe://ospedale.example.it/pacs ... in step",
		"PatientName= PatientID= ... ModalitiesInStudy=CT StudyInstanceUID=2.25.",
		"PatientIdentityRemoved ... YES",
		"reasons ... [disk_not_encrypted]",
		"deny ... spiffe://lab.example.com/ws/laptop7 ... EU->US ... lab-laptop-07",
		"OK: the chain and every checkpoint verify",
		"OK: imaging left the EU only de-identified",
	)
}

// netnsWorks reports whether this process can make a network namespace.
func netnsWorks() bool {
	ns := fmt.Sprintf("medgate-test-%d", os.Getpid())
	if err := exec.Command("ip", "netns", "add", ns).Run(); err != nil {
		return false
	}
	return exec.Command("ip", "netns", "delete", ns).Run() == nil
}
