package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"io"
	"time"

	"github.com/medgate/medgate/crypto/stream"
)

// cryptoRound measures, on one goroutine, the record format's seal and
// open throughput and raw AES-256-GCM on the same segment size, in MB/s.
func cryptoRound(d time.Duration) (seal, open, rawSeal, rawOpen float64, err error) {
	key := make([]byte, 32)
	rand.Read(key)
	seg := make([]byte, stream.DefaultSegmentSize)
	rand.Read(seg)
	mbps := func(n int64, took time.Duration) float64 { return float64(n) / took.Seconds() / 1e6 }
	loop := func(f func() (int64, error)) (float64, error) {
		var n int64
		start := time.Now()
		for time.Since(start) < d {
			k, err := f()
			if err != nil {
				return 0, err
			}
			n += k
		}
		return mbps(n, time.Since(start)), nil
	}

	// The record format, sealing 4 MiB streams to nowhere.
	const streamLen = 4 << 20
	if seal, err = loop(func() (int64, error) {
		w, err := stream.NewWriter(io.Discard, key, stream.Header{KeyID: "bench"})
		if err != nil {
			return 0, err
		}
		for i := 0; i < streamLen/len(seg); i++ {
			if _, err := w.Write(seg); err != nil {
				return 0, err
			}
		}
		return streamLen, w.Close()
	}); err != nil {
		return
	}
	var sealed bytes.Buffer
	w, _ := stream.NewWriter(&sealed, key, stream.Header{KeyID: "bench"})
	for i := 0; i < streamLen/len(seg); i++ {
		w.Write(seg)
	}
	w.Close()
	if open, err = loop(func() (int64, error) {
		r, err := stream.NewReader(bytes.NewReader(sealed.Bytes()), stream.UseKey(key))
		if err != nil {
			return 0, err
		}
		return r.WriteTo(io.Discard)
	}); err != nil {
		return
	}

	// Raw AES-256-GCM with a random nonce per segment, as the format uses,
	// over the same 4 MiB of segments so both see the same caches.
	block, _ := aes.NewCipher(key)
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return
	}
	plain := make([]byte, streamLen)
	rand.Read(plain)
	out := make([]byte, 0, len(seg)+aead.Overhead())
	if rawSeal, err = loop(func() (int64, error) {
		for off := 0; off < streamLen; off += len(seg) {
			out = aead.Seal(out[:0], nil, plain[off:off+len(seg)], nil)
		}
		return streamLen, nil
	}); err != nil {
		return
	}
	var cts [][]byte
	for off := 0; off < streamLen; off += len(seg) {
		cts = append(cts, aead.Seal(nil, nil, plain[off:off+len(seg)], nil))
	}
	pt := make([]byte, 0, len(seg))
	rawOpen, err = loop(func() (int64, error) {
		for _, ct := range cts {
			var err error
			if pt, err = aead.Open(pt[:0], nil, ct, nil); err != nil {
				return 0, err
			}
		}
		return streamLen, nil
	})
	return
}
