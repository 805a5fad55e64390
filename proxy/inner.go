package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/medgate/medgate/crypto/keys"
	"github.com/medgate/medgate/crypto/stream"
)

// Reason codes of the inner layer.
const (
	reasonKeyUnavailable     = "key_unavailable"
	reasonInnerLayerRequired = "inner_layer_required"
)

// innerKeys are a session's inner-layer keys: each direction is sealed
// under the data key of the side that sends it.
type innerKeys struct {
	send, recv []byte
	// sendHdr is the context this side seals under; the peer's stream
	// must name wantRoute and, when known, wantJurisdiction.
	sendHdr          stream.Header
	wantRoute        string
	wantJurisdiction string
}

// newSendKey makes a data key for the direction this side sends and wraps
// it under the keyring's current key-encryption key.
func (s *Server) newSendKey(ctx context.Context) ([]byte, *WrappedKey, error) {
	dek, err := keys.NewDataKey()
	if err != nil {
		return nil, nil, err
	}
	id, wrapped, err := s.keyring.Wrap(ctx, dek)
	if err != nil {
		return nil, nil, err
	}
	return dek, &WrappedKey{KeyID: id, Wrapped: wrapped}, nil
}

// unwrapPeerKey unwraps the data key the peer sends under. A keyring that
// does not hold the peer's key-encryption key cannot read its data.
func (s *Server) unwrapPeerKey(ctx context.Context, wk *WrappedKey) ([]byte, error) {
	if s.keyring == nil {
		return nil, errors.New("no keyring configured")
	}
	dek, err := s.keyring.Unwrap(ctx, wk.KeyID, wk.Wrapped)
	if err != nil {
		return nil, err
	}
	if len(dek) != keys.DataKeySize {
		return nil, fmt.Errorf("data key of %d bytes", len(dek))
	}
	return dek, nil
}

// errContext reports a peer stream sealed for another route or
// jurisdiction: ciphertext moved between contexts.
var errContext = errors.New("proxy: inner stream sealed for another context")

// pumpSealed seals src into the tunnel: the stream header and segments in
// data frames, the final segment at src's end, then an end frame. Each read
// of src is sealed at once, so request and response protocols see no delay.
// The record writer is made only when the app's first bytes arrive, so the
// peer's reader allocates nothing until the header comes; from then on the
// writer waits for the app in a small buffer and takes segment-sized ones
// only while data flows.
func pumpSealed(tun io.Writer, src io.Reader, k *innerKeys, activity func(int)) (int64, error) {
	first := make([]byte, smallRead)
	n, rerr := src.Read(first)
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		return 0, rerr
	}
	w, err := stream.NewWriter(&frameWriter{w: tun}, k.send, k.sendHdr)
	if err != nil {
		return 0, err
	}
	total := int64(n)
	if n > 0 {
		activity(n)
		if _, err := w.Write(first[:n]); err != nil {
			return 0, err
		}
		if err := w.Flush(); err != nil {
			return 0, err
		}
	}
	if rerr == nil {
		m, err := w.ReadFrom(&countingReader{r: src, activity: activity})
		total += m
		if err != nil {
			return total, err
		}
	}
	if err := w.Close(); err != nil {
		return total, err
	}
	return total, writeFrame(tun, frameEnd, nil)
}

// openSealed returns a reader of the peer's plaintext from its sealed
// stream in fr, after checking the stream's context. It blocks until the
// peer's stream header arrives.
func openSealed(fr io.Reader, k *innerKeys) (*stream.Reader, error) {
	r, err := stream.NewReader(fr, stream.UseKey(k.recv))
	if err != nil {
		return nil, err
	}
	h := r.Header()
	if h.Route != k.wantRoute || k.wantJurisdiction != "" && h.Jurisdiction != "" && h.Jurisdiction != k.wantJurisdiction {
		return nil, fmt.Errorf("%w: route %q, jurisdiction %q", errContext, h.Route, h.Jurisdiction)
	}
	return r, nil
}

type countingReader struct {
	r        io.Reader
	activity func(int)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.activity(n)
	}
	return n, err
}

type countingWriter struct {
	w        io.Writer
	activity func(int)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if n > 0 {
		c.activity(n)
	}
	return n, err
}
