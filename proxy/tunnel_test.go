package proxy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// countingDst counts the writes a pump makes.
type countingDst struct {
	bytes.Buffer
	writes int
}

func (d *countingDst) Write(p []byte) (int, error) {
	d.writes++
	return d.Buffer.Write(p)
}

// tunnelPair returns the two ends of a TLS tunnel over loopback, and the
// socket under the client's end.
func tunnelPair(t *testing.T) (client, server tcpTunnel, sock *countingConn) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan tcpTunnel, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		tun, tc := newTCPTunnel(raw, func(c net.Conn) *tls.Conn { return tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}}) })
		if tc.Handshake() != nil {
			close(accepted)
			return
		}
		accepted <- tun
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sock = &countingConn{Conn: raw}
	client, tc := newTCPTunnel(sock, func(c net.Conn) *tls.Conn { return tls.Client(c, &tls.Config{InsecureSkipVerify: true}) })
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	server, ok := <-accepted
	if !ok {
		t.Fatal("server handshake failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server, sock
}

func TestTunnelWriteIsOneSocketWrite(t *testing.T) {
	tests := []struct {
		name      string
		size      int
		maxWrites int64
	}{
		{"small frame", 100, 1},
		{"one record", 16<<10 - frameHeaderLen, 1},
		{"two records", frameHeaderLen + dataChunk, 1},
		{"more than a batch", 100 << 10, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server, sock := tunnelPair(t)
			// Records past the first 128 KiB are full-sized.
			warm := make([]byte, 256<<10)
			go client.Write(warm)
			if _, err := io.ReadFull(server, warm); err != nil {
				t.Fatal(err)
			}
			msg := make([]byte, tt.size)
			rand.Read(msg)
			before := sock.writes.Load()
			go client.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(server, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatal("bytes differ")
			}
			if n := sock.writes.Load() - before; n < 1 || n > tt.maxWrites {
				t.Errorf("%d socket writes, want 1 to %d", n, tt.maxWrites)
			}
		})
	}
}

// TestTunnelConcurrentWritersKeepRecordOrder writes frames from several
// goroutines at once, as the copy loop and a posture refresh do: every
// frame must arrive whole, each writer's in its order, and the records must
// still decrypt, which they would not out of sequence.
func TestTunnelConcurrentWritersKeepRecordOrder(t *testing.T) {
	client, server, _ := tunnelPair(t)
	const writers, frames = 4, 200
	frame := func(w, i int) []byte {
		p := bytes.Repeat([]byte{byte(i)}, 8+(i*7919)%(dataChunk-8))
		p[0] = byte(w)
		binary.BigEndian.PutUint32(p[1:], uint32(i))
		return p
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range frames {
				if err := writeFrame(client, frameData, frame(w, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	next := make([]int, writers)
	var hdr [frameHeaderLen]byte
	for range writers * frames {
		_, n, err := readHeader(server, &hdr)
		if err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(server, payload); err != nil {
			t.Fatal(err)
		}
		w := int(payload[0])
		if w >= writers || !bytes.Equal(payload, frame(w, next[w])) {
			t.Fatalf("writer %d frame %d arrived wrong", w, next[w])
		}
		next[w]++
	}
	wg.Wait()
}

// TestPumpFromTunnelWritesWholeFrames checks that a frame of two records
// reaches the app in one write.
func TestPumpFromTunnelWritesWholeFrames(t *testing.T) {
	client, server, _ := tunnelPair(t)
	var want bytes.Buffer
	go func() {
		buf := make([]byte, dataChunk)
		for i := range 20 {
			for j := range buf {
				buf[j] = byte(i + j)
			}
			writeFrame(client, frameData, buf)
		}
		writeFrame(client, frameEnd, nil)
	}()
	for i := range 20 {
		for j := range dataChunk {
			want.WriteByte(byte(i + j))
		}
	}
	var dst countingDst
	n, err := pumpFromTunnel(&dst, &frameReader{r: server}, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(want.Len()) || !bytes.Equal(dst.Bytes(), want.Bytes()) {
		t.Fatalf("got %d bytes, want %d, or they differ", n, want.Len())
	}
	// The first reads use the small buffer; from then on, a write a frame.
	if dst.writes > 20+3 {
		t.Errorf("%d writes for 20 frames", dst.writes)
	}
}
