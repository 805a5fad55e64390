package stream

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// fuzzSeeds returns streams from the Writer: the stored vectors and a few
// small ones with short, flushed segments so that mutations reach every
// part of the format cheaply.
func fuzzSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	files, _ := filepath.Glob("testdata/*.mgs")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) < 4096 {
			seeds = append(seeds, b)
		}
	}
	for _, writes := range [][]string{nil, {"a"}, {"hello", " ", "world"}, {"x", "", "yz"}} {
		var buf bytes.Buffer
		w, err := NewWriter(&buf, testKey, testHeader(0))
		if err != nil {
			f.Fatal(err)
		}
		for _, s := range writes {
			w.Write([]byte(s))
			w.Flush()
		}
		if err := w.Close(); err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, buf.Bytes())
	}
	return seeds
}

var readErrors = []error{ErrHeader, ErrWrongKey, ErrAuthFailed, ErrTruncated, ErrTrailingData}

func isReadError(err error) bool {
	for _, e := range readErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// FuzzReader feeds arbitrary bytes to a Reader: it must not panic, must
// fail only with one of the package's sentinels, must keep failing the same
// way, and what it accepts must seal and open again to the same plaintext.
func FuzzReader(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data), UseKey(testKey))
		if err != nil {
			if !isReadError(err) {
				t.Fatalf("NewReader error %v is not a stream sentinel", err)
			}
			return
		}
		got, err := io.ReadAll(r)
		// Reads of whole segments take the other path through Read.
		r2, _ := NewReader(bytes.NewReader(data), UseKey(testKey))
		var got2 []byte
		big := make([]byte, r2.Header().SegmentSize)
		for {
			n, err2 := r2.Read(big)
			got2 = append(got2, big[:n]...)
			if err2 == io.EOF {
				err2 = nil
			}
			if err2 != nil || n == 0 {
				if (err == nil) != (err2 == nil) || !bytes.Equal(got, got2) {
					t.Fatalf("small and whole-segment reads disagree: %v, %v", err, err2)
				}
				break
			}
		}
		if err != nil {
			if !isReadError(err) {
				t.Fatalf("Read error %v is not a stream sentinel", err)
			}
			if _, again := r.Read(make([]byte, 1)); again != err {
				t.Fatalf("error did not stick: %v then %v", err, again)
			}
			return
		}
		h := r.Header()
		ct := seal(t, testKey, h, got)
		back, err := open(bytes.NewReader(ct), testKey)
		if err != nil || !bytes.Equal(back, got) {
			t.Fatalf("round trip of accepted stream failed: %v", err)
		}
	})
}

// FuzzHeader feeds arbitrary bytes to the header parser: what it accepts
// must encode back to the same bytes, and a Writer must accept its fields.
func FuzzHeader(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		raw, err := parseHeader(bytes.NewReader(s))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw.bytes)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		raw, err := parseHeader(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrHeader) && !errors.Is(err, ErrTruncated) {
				t.Fatalf("parse error %v is neither ErrHeader nor ErrTruncated", err)
			}
			return
		}
		if !bytes.Equal(raw.bytes, data[:len(raw.bytes)]) {
			t.Fatal("parsed bytes are not the input's prefix")
		}
		enc := raw.Header.appendBody(nil, raw.salt)
		enc = append(enc, raw.commitment...)
		enc = append(enc, raw.mac...)
		if !bytes.Equal(enc, raw.bytes) {
			t.Fatal("header does not encode back to the bytes it was parsed from")
		}
		ct := seal(t, testKey, raw.Header, []byte("x"))
		r, err := NewReader(bytes.NewReader(ct), UseKey(testKey))
		if err != nil {
			t.Fatalf("Writer output with the parsed fields does not open: %v", err)
		}
		got := r.Header()
		if got.KeyID != raw.KeyID || !bytes.Equal(got.WrappedKey, raw.WrappedKey) || got.Route != raw.Route ||
			got.Jurisdiction != raw.Jurisdiction || got.PolicyVersion != raw.PolicyVersion || got.SegmentSize != raw.SegmentSize {
			t.Fatalf("header round trip: got %+v, want %+v", got, raw.Header)
		}
	})
}
