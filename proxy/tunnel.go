package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// tunnel is one proxied connection's channel between two sidecars: a TLS
// connection over TCP, or one bidirectional stream of a QUIC connection.
// Everything above it (hello and admit, admission, the inner layer,
// posture refresh) is the same for both.
type tunnel interface {
	io.ReadWriter
	// Close ends the tunnel gracefully.
	Close() error
	// Abort ends it at once; the peer sees an error, not a clean end.
	Abort()
	SetDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
	// Transport is "tcp" or "quic".
	Transport() string
}

// tcpTunnel is a TLS connection over TCP. crypto/tls hands each record
// (at most 16 KiB of data) to the socket in a write of its own; Write puts
// all the records of one call in one socket write instead. A full data
// frame is two records, and one write of 32 KiB costs the kernel much less
// per byte, sender and receiver together, than two of 16 KiB (about 40%
// less on loopback: bench/BOUNDS.md).
type tcpTunnel struct {
	*tls.Conn
	out *recordBatcher
}

// newTCPTunnel returns raw's TLS connection, made by wrap (tls.Client or
// tls.Server with its configuration), as a tunnel.
func newTCPTunnel(raw net.Conn, wrap func(net.Conn) *tls.Conn) (tcpTunnel, *tls.Conn) {
	b := &recordBatcher{Conn: raw}
	tc := wrap(b)
	return tcpTunnel{Conn: tc, out: b}, tc
}

func (t tcpTunnel) Write(p []byte) (int, error) {
	t.out.hold()
	n, err := t.Conn.Write(p)
	if ferr := t.out.release(); err == nil && ferr != nil {
		return 0, ferr
	}
	return n, err
}

func (t tcpTunnel) Abort()            { t.out.Conn.Close() }
func (t tcpTunnel) Transport() string { return "tcp" }

// batchSize is the most a recordBatcher holds: the two full records of a
// data frame, with their headers, content types and tags.
const batchSize = 2 * (16384 + 256)

var batchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, batchSize)
	return &b
}}

// recordBatcher is the net.Conn under a tunnel's tls.Conn. While a Write of
// the tunnel holds it, the records crypto/tls writes are kept, in order,
// and go to the socket together on release (or when batchSize would be
// exceeded). Writes outside a hold, the handshake's and those crypto/tls
// makes on its own, go straight through. Between holds it keeps no buffer.
type recordBatcher struct {
	net.Conn
	mu    sync.Mutex
	holds int
	buf   *[]byte
}

func (b *recordBatcher) hold() {
	b.mu.Lock()
	b.holds++
	b.mu.Unlock()
}

// release ends a hold and writes what is kept.
func (b *recordBatcher) release() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holds--
	err := b.flush()
	if b.buf != nil && b.holds == 0 {
		batchPool.Put(b.buf)
		b.buf = nil
	}
	return err
}

func (b *recordBatcher) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.holds == 0 {
		return b.Conn.Write(p)
	}
	if b.buf == nil {
		b.buf = batchPool.Get().(*[]byte)
	}
	if len(*b.buf)+len(p) > cap(*b.buf) {
		if err := b.flush(); err != nil {
			return 0, err
		}
		if len(p) > cap(*b.buf) {
			return b.Conn.Write(p)
		}
	}
	*b.buf = append(*b.buf, p...)
	return len(p), nil
}

// flush writes what is kept. Callers hold mu.
func (b *recordBatcher) flush() error {
	if b.buf == nil || len(*b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(*b.buf)
	*b.buf = (*b.buf)[:0]
	return err
}

// quicTunnel is a QUIC stream; closing it closes both directions.
type quicTunnel struct{ *quic.Stream }

// Stream error codes sent when a stream is aborted.
const quicStreamAborted quic.StreamErrorCode = 1

func (t quicTunnel) Close() error {
	t.CancelRead(0)
	return t.Stream.Close()
}

func (t quicTunnel) Abort() {
	t.CancelWrite(quicStreamAborted)
	t.CancelRead(quicStreamAborted)
}

func (t quicTunnel) Transport() string { return "quic" }
