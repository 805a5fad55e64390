package hl7

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readAll(r *Reader) ([]string, error) {
	var out []string
	for {
		f, err := r.ReadFrame()
		if err != nil {
			if err == io.EOF {
				return out, nil
			}
			return out, err
		}
		out = append(out, string(f))
	}
}

func TestReader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		want []string
		err  error
	}{
		{name: "one", in: "\x0bMSH|a\x1c\r", want: []string{"MSH|a"}},
		{name: "two", in: "\x0bA\x1c\r\x0bB\x1c\r", want: []string{"A", "B"}},
		{name: "line ends between", in: "\r\n\x0bA\x1c\r\n\n \x0bB\x1c\r\n", want: []string{"A", "B"}},
		{name: "newline for cr", in: "\x0bA\x1c\n", want: []string{"A"}},
		{name: "no cr at the end", in: "\x0bA\x1c", want: []string{"A"}},
		{name: "empty", in: "", want: nil},
		{name: "empty frame", in: "\x0b\x1c\r", want: []string{""}},
		{name: "garbage before", in: "hello\x0bA\x1c\r", err: ErrFraming},
		{name: "garbage after", in: "\x0bA\x1c\rX", want: []string{"A"}, err: ErrFraming},
		{name: "bad byte after end block", in: "\x0bA\x1cX", err: ErrFraming},
		{name: "truncated", in: "\x0bMSH|a", err: ErrFraming},
		{name: "start inside", in: "\x0bA\x0bB\x1c\r", err: ErrFraming},
		{name: "exactly max", in: "\x0b12345\x1c\r", max: 5, want: []string{"12345"}},
		{name: "too large", in: "\x0b123456\x1c\r", max: 5, err: ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(NewReader(strings.NewReader(tt.in), tt.max))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("frames (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReaderLargeFrameAcrossBuffers(t *testing.T) {
	msg := bytes.Repeat([]byte("OBX|1|ED|||"), 30000) // larger than the read buffer
	var in bytes.Buffer
	WriteFrame(&in, msg)
	WriteFrame(&in, []byte("B"))
	got, err := readAll(NewReader(&in, 0))
	if err != nil || len(got) != 2 || got[0] != string(msg) || got[1] != "B" {
		t.Fatalf("err %v, %d frames", err, len(got))
	}
}

func TestReaderTooLargeKeepsHeader(t *testing.T) {
	r := NewReader(strings.NewReader("\x0bMSH|^~\\&|A|B|C|D|20240101||ADT^A01|CTRL9|P|2.5\r"+strings.Repeat("x", 100)+"\x1c\r"), 64)
	f, err := r.ReadFrame()
	if !errors.Is(err, ErrTooLarge) || len(f) != 64 || !strings.HasPrefix(string(f), "MSH|") {
		t.Fatalf("err %v, %d bytes", err, len(f))
	}
	if _, err2 := r.ReadFrame(); !errors.Is(err2, ErrTooLarge) {
		t.Errorf("error did not stick: %v", err2)
	}
}

func TestWriteFrameRefusesFramingBytes(t *testing.T) {
	for _, msg := range []string{"a\x0bb", "a\x1cb"} {
		if err := WriteFrame(io.Discard, []byte(msg)); !errors.Is(err, ErrFraming) {
			t.Errorf("%q: err = %v", msg, err)
		}
	}
}

func FuzzMLLPReader(f *testing.F) {
	for _, m := range sampleMessages(f) {
		f.Add(AppendFrame(nil, m))
	}
	f.Add([]byte("\x0bA\x1c\r\n\x0bB\x1c"))
	f.Add([]byte("\x0b\x1c\r"))
	f.Add([]byte("MSH|^~\\&|\r"))
	f.Fuzz(func(t *testing.T, in []byte) {
		const max = 1 << 12
		frames, err := readAll(NewReader(bytes.NewReader(in), max))
		var again bytes.Buffer
		for _, fr := range frames {
			if len(fr) > max {
				t.Fatalf("frame of %d bytes, max %d", len(fr), max)
			}
			if err := WriteFrame(&again, []byte(fr)); err != nil {
				t.Fatalf("frame read cannot be written: %v", err)
			}
		}
		if err == nil && bytes.Count(in, []byte{StartBlock}) != len(frames) {
			t.Fatalf("%d start blocks, %d frames", bytes.Count(in, []byte{StartBlock}), len(frames))
		}
		back, err := readAll(NewReader(&again, max))
		if err != nil {
			t.Fatalf("rereading: %v", err)
		}
		if diff := cmp.Diff(frames, back); diff != "" {
			t.Fatalf("written frames read back differently:\n%s", diff)
		}
	})
}
