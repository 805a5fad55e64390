package stream

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"io"
	"net"
	"testing"
)

// benchSizes are the segment sizes compared when choosing
// DefaultSegmentSize; the default is among them.
var benchSizes = []int{MinSegmentSize, 32 << 10, DefaultSegmentSize, 256 << 10, MaxSegmentSize}

func sizeName(n int) string { return fmt.Sprintf("%dKiB", n>>10) }

// BenchmarkSeal seals one segment per op through Writer.Write into
// io.Discard.
func BenchmarkSeal(b *testing.B) {
	for _, seg := range benchSizes {
		b.Run(sizeName(seg), func(b *testing.B) {
			pt := pattern(seg)
			w, err := NewWriter(io.Discard, testKey, Header{SegmentSize: seg})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(seg))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := w.Write(pt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpen opens one segment per op through Reader.Read into a
// segment-sized buffer (which Read opens straight into), including the copy
// from the source that raw GCM does not pay. The source stream is kept to
// about 2 MiB so it stays in cache, as data just read from a socket is;
// a larger one measures memory bandwidth instead.
func BenchmarkOpen(b *testing.B) {
	for _, seg := range benchSizes {
		segs := max(4, (2<<20)/seg)
		b.Run(sizeName(seg), func(b *testing.B) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, testKey, Header{SegmentSize: seg})
			if err != nil {
				b.Fatal(err)
			}
			for range segs {
				if _, err := w.Write(pattern(seg)); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			ct := buf.Bytes()
			src := bytes.NewReader(ct)
			newReader := func() *Reader {
				src.Reset(ct)
				r, err := NewReader(src, UseKey(testKey))
				if err != nil {
					b.Fatal(err)
				}
				return r
			}
			r := newReader()
			out := make([]byte, seg)
			n := 0
			b.SetBytes(int64(seg))
			b.ReportAllocs()
			for b.Loop() {
				if n == segs {
					b.StopTimer()
					r, n = newReader(), 0
					b.StartTimer()
				}
				if _, err := io.ReadFull(r, out); err != nil {
					b.Fatal(err)
				}
				n++
			}
		})
	}
}

// BenchmarkRawGCM is the baseline: AES-256-GCM with random nonces sealing
// and opening one segment in place, with associated data of the stream's
// size, and nothing else.
func BenchmarkRawGCM(b *testing.B) {
	for _, seg := range benchSizes {
		block, err := aes.NewCipher(testKey)
		if err != nil {
			b.Fatal(err)
		}
		aead, err := cipher.NewGCMWithRandomNonce(block)
		if err != nil {
			b.Fatal(err)
		}
		pt := pattern(seg)
		ad := make([]byte, adSize)
		b.Run("seal/"+sizeName(seg), func(b *testing.B) {
			out := make([]byte, 0, seg+aead.Overhead())
			b.SetBytes(int64(seg))
			b.ReportAllocs()
			for b.Loop() {
				out = aead.Seal(out[:0], nil, pt, ad)
			}
		})
		b.Run("open/"+sizeName(seg), func(b *testing.B) {
			ct := aead.Seal(nil, nil, pt, ad)
			out := make([]byte, 0, seg)
			b.SetBytes(int64(seg))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := aead.Open(out[:0], nil, ct, ad); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoopback seals into a loopback TCP connection and opens from
// it, one segment per op: what one direction of the tunnel costs,
// syscalls included.
func BenchmarkLoopback(b *testing.B) {
	for _, seg := range benchSizes {
		b.Run(sizeName(seg), func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			done := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					done <- err
					return
				}
				defer c.Close()
				r, err := NewReader(c, UseKey(testKey))
				if err != nil {
					done <- err
					return
				}
				_, err = r.WriteTo(io.Discard)
				done <- err
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			w, err := NewWriter(c, testKey, Header{SegmentSize: seg})
			if err != nil {
				b.Fatal(err)
			}
			pt := pattern(seg)
			b.SetBytes(int64(seg))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := w.Write(pt); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			// The Reader returns io.EOF only once the connection ends.
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				b.Fatal(err)
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
