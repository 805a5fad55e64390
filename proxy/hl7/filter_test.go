package hl7

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/medgate/medgate/proxy/mask"
)

// fakeReceiver acknowledges every message it gets with MSA|AA and sends
// what it got on received.
func fakeReceiver(tb testing.TB) (addr string, received chan []byte) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	received = make(chan []byte, 16)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				r := NewReader(conn, 0)
				for {
					f, err := r.ReadFrame()
					if err != nil {
						return
					}
					received <- append([]byte(nil), f...)
					m, err := Parse(f)
					if err != nil {
						return
					}
					ack := fmt.Sprintf("MSH|^~\\&|RCV|RF|%s|%s|20240101||ACK^A01|A%s|P|2.5\rMSA|AA|%s\r",
						m.Header().Field(3), m.Header().Field(4), m.ControlID(), m.ControlID())
					WriteFrame(conn, []byte(ack))
				}
			}()
		}
	}()
	return ln.Addr().String(), received
}

func dialSend(tb testing.TB, addr string, frames ...[]byte) (answers [][]byte) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := NewReader(conn, 0)
	for _, f := range frames {
		if _, err := conn.Write(f); err != nil {
			return answers
		}
		a, err := r.ReadFrame()
		if err != nil {
			return answers
		}
		answers = append(answers, append([]byte(nil), a...))
	}
	return answers
}

func TestFilterLoopback(t *testing.T) {
	addr, received := fakeReceiver(t)
	rl := startRelay(t, hipaaCodec(t), addr)
	adt, _ := os.ReadFile("testdata/adt_a01.hl7")
	oru, _ := os.ReadFile("testdata/oru_r01.hl7")
	answers := dialSend(t, rl.addr(), AppendFrame(nil, adt), append([]byte("\r\n"), AppendFrame(nil, oru)...))
	rl.wait(t)
	if len(answers) != 2 {
		t.Fatalf("%d answers", len(answers))
	}
	for i, want := range []string{"MSG00001", "MSG00002"} {
		if code, id, ok := ReadACK(answers[i]); !ok || code != "AA" || id != want {
			t.Errorf("answer %d: %q %q %v", i, code, id, ok)
		}
	}
	for range 2 {
		got := <-received
		for _, c := range canaries {
			if bytes.Contains(got, []byte(c)) {
				t.Errorf("%q reached the receiver", c)
			}
		}
	}
	objs, errs := rl.results()
	if len(errs) != 0 {
		t.Errorf("relay errors: %v", errs)
	}
	if len(objs) != 2 || objs[0].Operation != "ADT^A01" || objs[1].Operation != "ORU^R01" || objs[0].PatientPseudonym != objs[1].PatientPseudonym {
		t.Errorf("objects %+v", objs)
	}
}

func TestFilterRefuses(t *testing.T) {
	adt, _ := os.ReadFile("testdata/adt_a01.hl7")
	tests := []struct {
		name   string
		in     string
		nak    bool
		id     string
		passed int
	}{
		{name: "garbage frame", in: "\x0bThis is not HL7 at all\x1c\r", nak: true},
		{name: "prose after a message", in: "\x0bMSH|^~\\&|A|B|C|D|2024||ORU^R01|Q47|P|2.3\rPID|||1\r\rSample lines example 2:\x1c\r", nak: true, id: "Q47"},
		{name: "good then garbage", in: string(AppendFrame(nil, adt)) + "\x0bMSH|^~\\&|A|B|C|D|2024||ADT^A01|BAD2|P|2.3\rpid|1\x1c\r", nak: true, id: "BAD2", passed: 1},
		{name: "not mllp", in: "MSH|^~\\&|A|B|C|D|2024||ADT^A01|X|P|2.3\r"},
		{name: "truncated", in: "\x0bMSH|^~\\&|A|B|C|D|2024||ADT^A01|X|P|2.3\r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var dst, back bytes.Buffer
			var objs []mask.Object
			err := hipaaCodec(t).Filter(&dst, strings.NewReader(tt.in), &back, func(o mask.Object) { objs = append(objs, o) })
			if !errors.Is(err, mask.ErrUnmaskable) {
				t.Fatalf("err = %v, want ErrUnmaskable", err)
			}
			frames, _ := readAll(NewReader(&dst, 0))
			if len(frames) != tt.passed || len(objs) != tt.passed {
				t.Errorf("%d frames and %d objects crossed, want %d", len(frames), len(objs), tt.passed)
			}
			if !tt.nak {
				if back.Len() != 0 {
					t.Errorf("answered %q", back.String())
				}
				return
			}
			code, id, ok := ReadACK(firstFrame(t, back.Bytes()))
			if !ok || code != "AR" || id != tt.id {
				t.Errorf("answer %q: code %q id %q", back.String(), code, id)
			}
		})
	}
}

func TestNAK(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	nak := NAK([]byte("MSH#!@$%#SAPP#SFAC#RAPP#RFAC#20240501##ADT!A01#CTRL$F$7#T#2.3\rPID###secret"), now)
	m, err := Parse(nak)
	if err != nil {
		t.Fatal(err)
	}
	h := m.Header()
	got := []string{h.Field(3), h.Field(4), h.Field(5), h.Field(6), h.Field(7), h.Field(9), h.Field(11), h.Field(12), m.Segments[1].Field(1), m.Segments[1].Field(2)}
	want := []string{"RAPP", "RFAC", "SAPP", "SFAC", "20240501120000", "ACK!A01!ACK", "T", "2.3", "AR", "CTRL$F$7"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("NAK fields %q, want %q", got, want)
	}
	if bytes.Contains(nak, []byte("secret")) {
		t.Error("NAK holds message content")
	}
	if _, id, _ := ReadACK(nak); id != "CTRL#7" {
		t.Errorf("control ID %q", id)
	}
	plain := NAK([]byte("garbage"), now)
	if code, id, ok := ReadACK(plain); !ok || code != "AR" || id != "" {
		t.Errorf("NAK of garbage %q", plain)
	}
}

func TestRepliesPassACKsAndMaskOthers(t *testing.T) {
	ack := []byte("MSH|^~\\&|R|F|S|G|20240510101010||ACK^A01|9|P|2.5\rMSA|AA|MSG00001|Zelda Canarywhistle accepted\r")
	oru, _ := os.ReadFile("testdata/oru_r01.hl7")
	var in, dst bytes.Buffer
	WriteFrame(&in, ack)
	WriteFrame(&in, oru)
	if err := hipaaCodec(t).Replies(&dst, &in, nil, nil); err != nil {
		t.Fatal(err)
	}
	frames, _ := readAll(NewReader(&dst, 0))
	if len(frames) != 2 || frames[0] != string(ack) || strings.Contains(frames[1], "Canarywhistle") {
		t.Errorf("replies %q", frames)
	}
	if !IsACK(ack) || IsACK(oru) || IsACK([]byte("ACK")) {
		t.Error("IsACK")
	}
}
