package proxy

import (
	"crypto/tls"
	"io"
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

type tcpTunnel struct{ *tls.Conn }

func (t tcpTunnel) Abort()            { t.NetConn().Close() }
func (t tcpTunnel) Transport() string { return "tcp" }

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
