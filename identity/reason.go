package identity

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Reason says why a peer was refused during the TLS handshake. It is a
// metric label and a log field; the peer itself learns only a TLS alert.
type Reason string

// Handshake refusal reasons.
const (
	ReasonNoClientCert       Reason = "no_client_cert"
	ReasonUnknownTrustDomain Reason = "unknown_trust_domain"
	ReasonUntrusted          Reason = "untrusted_chain"
	ReasonExpired            Reason = "expired"
	ReasonNotYetValid        Reason = "not_yet_valid"
	ReasonBadSVID            Reason = "bad_svid"
	ReasonIDNotAllowed       Reason = "id_not_allowed"
	ReasonWrongPeer          Reason = "wrong_peer_id"
	ReasonWrongProtocol      Reason = "wrong_protocol"
	ReasonNotTLS             Reason = "not_tls"
	ReasonTLSVersion         Reason = "tls_version"
	ReasonTimeout            Reason = "handshake_timeout"
	ReasonClosed             Reason = "closed_by_peer"
	ReasonNoSVID             Reason = "no_local_svid"
	ReasonOther              Reason = "handshake_failed"
)

// PeerError is a refusal of the peer's identity, returned from the TLS
// handshake. ID is zero when the peer presented no usable SVID.
type PeerError struct {
	Reason Reason
	ID     spiffeid.ID
	Err    error
}

func (e *PeerError) Error() string {
	var b strings.Builder
	b.WriteString("identity: peer refused: ")
	b.WriteString(string(e.Reason))
	if !e.ID.IsZero() {
		fmt.Fprintf(&b, " (%s)", e.ID)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *PeerError) Unwrap() error { return e.Err }

// Classify maps an error from a TLS handshake to a Reason. It never returns
// the empty Reason.
func Classify(err error) Reason {
	var pe *PeerError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	var rhe tls.RecordHeaderError
	if errors.As(err, &rhe) {
		return ReasonNotTLS
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
		return ReasonTimeout
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return ReasonClosed
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "didn't provide a certificate"),
		strings.Contains(msg, "certificate required"):
		return ReasonNoClientCert
	case strings.Contains(msg, "unsupported versions"),
		strings.Contains(msg, "protocol version not supported"):
		return ReasonTLSVersion
	case strings.Contains(msg, "no application protocol"),
		strings.Contains(msg, "unsupported application protocols"),
		strings.Contains(msg, "no_application_protocol"):
		return ReasonWrongProtocol
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return ReasonNotTLS
	case strings.Contains(msg, "connection reset by peer"), strings.Contains(msg, "broken pipe"):
		return ReasonClosed
	}
	return ReasonOther
}
