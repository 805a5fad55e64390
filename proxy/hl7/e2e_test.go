package hl7

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The end-to-end tests run real HL7 programs: python3-hl7's mllp_send
// (apt install python3-hl7) sends through a relay applying the filter to
// simple-hl7 (npm, testdata/node), which acknowledges. They skip, saying
// why, when a program is missing.

const mllpSend = "/usr/bin/mllp_send"

var npmOnce sync.Once

func needPeers(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: skipped with -short")
	}
	if _, err := os.Stat(mllpSend); err != nil {
		t.Skip("end-to-end: mllp_send missing (apt-get install python3-hl7)")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("end-to-end: node missing (apt-get install nodejs npm)")
	}
	npmOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(nodeModules, "simple-hl7")); err == nil {
			return
		}
		if _, err := exec.LookPath("npm"); err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = "testdata/node"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("npm ci in testdata/node: %v\n%s", err, out)
		}
	})
	if _, err := os.Stat(filepath.Join(nodeModules, "simple-hl7")); err != nil {
		t.Skip("end-to-end: simple-hl7 missing and npm could not install it (cd proxy/hl7/testdata/node && npm ci)")
	}
}

// startReceiver runs testdata/node/receiver.js and returns its address and
// the file it appends received messages to.
func startReceiver(t *testing.T) (addr, received string) {
	received = filepath.Join(t.TempDir(), "received.jsonl")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "node", "receiver.js", received)
	cmd.Dir = "testdata/node"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("receiver stderr:\n%s", stderr.String())
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
		return "127.0.0.1:" + p, received
	case <-time.After(20 * time.Second):
		t.Fatalf("receiver did not start: %s", stderr.String())
	}
	return "", ""
}

// send runs mllp_send on file through addr and returns what it printed
// (the answers, as Python byte strings).
func send(t *testing.T, addr, file string, loose bool) string {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	args := []string{mllpSend, "-f", file, "-p", port, host}
	if loose {
		args = append([]string{mllpSend, "--loose"}, args[1:]...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/usr/bin/python3", args...).CombinedOutput()
	if err != nil {
		t.Logf("mllp_send: %v", err)
	}
	return string(out)
}

func readReceived(t *testing.T, file string) []string {
	b, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var m string
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

func TestEndToEnd(t *testing.T) {
	needPeers(t)
	recvAddr, received := startReceiver(t)
	rl := startRelay(t, hipaaCodec(t), recvAddr)

	tests := []struct {
		name, file string
		controlIDs []string
		canaries   []string
	}{
		{"ADT^A01 with PID, NK1, IN1", "testdata/adt_a01.hl7", []string{"MSG00001"}, canaries},
		{"ORU^R01", "testdata/oru_r01.hl7", []string{"MSG00002"}, canaries},
		// Its ROL segments keep the care team's office addresses: providers
		// are not identifiers of the patient under safe harbor.
		{"hl7-standard ADT^A01", filepath.Join(nodeModules, "hl7-standard/tests/data/message.hl7"), []string{"24553"},
			[]string{"MotherToBe", "123 Main St", "(555)555-1234", "222335656", "KNIGHT", "STORMY", "90000408", "19650601", "123 MAIN ST", "Edina", "EDINA", "EDEN PRAIRIE"}},
		{"simple-hl7 ADT^A04", filepath.Join(nodeModules, "simple-hl7/test/samples/adt.hl7"), nil, nil},
		{"simple-hl7 ORM^O01", filepath.Join(nodeModules, "simple-hl7/test/samples/orm.hl7"), nil, nil},
		{"simple-hl7 ORU^R01", filepath.Join(nodeModules, "simple-hl7/test/samples/oru.hl7"), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(received)
			orig, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			msgs := splitMessages(orig)
			ids := tt.controlIDs
			if ids == nil {
				for _, m := range msgs {
					p, err := Parse(bytes.TrimSpace(m))
					if err != nil {
						t.Fatal(err)
					}
					ids = append(ids, p.ControlID())
				}
			}
			out := send(t, rl.addr(), tt.file, true)
			rl.wait(t)
			for _, id := range ids {
				if !strings.Contains(out, "MSA|AA|"+id) {
					t.Errorf("no MSA|AA|%s came back to mllp_send:\n%s", id, out)
				}
			}
			got := readReceived(t, received)
			if testing.Verbose() {
				for _, g := range got {
					t.Logf("received %q", g)
				}
			}
			if len(got) != len(msgs) {
				t.Fatalf("receiver got %d messages, want %d", len(got), len(msgs))
			}
			for i, g := range got {
				for _, c := range tt.canaries {
					if strings.Contains(g, c) {
						t.Errorf("%q reached the receiver", c)
					}
				}
				origPID := segmentOf(t, msgs[i], "PID")
				gotPID := segmentOf(t, []byte(strings.TrimSuffix(strings.TrimPrefix(g, "\x0b"), "\x1c\r")), "PID")
				if origPID == nil || gotPID == nil {
					continue
				}
				if name := origPID.Field(5); name != "" && strings.Contains(g, name) {
					t.Errorf("patient name PID-5 reached the receiver")
				}
				if v := gotPID.Field(5); v != "" && !isToken(v) {
					t.Errorf("PID-5 is %q, not a pseudonym", v)
				}
			}
		})
	}
	objs, errs := rl.results()
	if len(errs) != 0 {
		t.Errorf("relay errors: %v", errs)
	}
	if len(objs) < len(tests) {
		t.Errorf("%d objects reported", len(objs))
	}
}

func segmentOf(t *testing.T, msg []byte, name string) *Segment {
	msg = bytes.ReplaceAll(bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\r")), []byte("\n"), []byte("\r"))
	m, err := Parse(bytes.TrimRight(msg, "\r"))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	for i := range m.Segments {
		if m.Segments[i].Name == name {
			return &m.Segments[i]
		}
	}
	return nil
}

func TestEndToEndRefusals(t *testing.T) {
	needPeers(t)
	recvAddr, received := startReceiver(t)
	rl := startRelay(t, hipaaCodec(t), recvAddr)

	garbage := filepath.Join(t.TempDir(), "garbage.mllp")
	os.WriteFile(garbage, []byte("\x0bThis is not HL7, it is a letter to Zelda Canarywhistle\x1c\r"), 0o600)
	tests := []struct {
		name, file string
		loose      bool
		nak        string
	}{
		{"garbage in a frame", garbage, false, "MSA|AR|"},
		{"hl7 samples.txt with prose lines", filepath.Join(nodeModules, "hl7/test/fixtures/samples.txt"), true, "MSA|AR|"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(received)
			out := send(t, rl.addr(), tt.file, tt.loose)
			rl.wait(t)
			if !strings.Contains(out, tt.nak) {
				t.Errorf("mllp_send did not get %q:\n%s", tt.nak, out)
			}
			if strings.Contains(out, "Canarywhistle") {
				t.Error("the answer echoes the message")
			}
			if got := readReceived(t, received); len(got) != 0 {
				t.Errorf("receiver got %d messages", len(got))
			}
		})
	}
	_, errs := rl.results()
	if len(errs) != len(tests) {
		t.Errorf("relay errors %v, want one per refused connection", errs)
	}
}
