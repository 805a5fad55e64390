package proxy

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/medgate/medgate/crypto/stream"
	"github.com/medgate/medgate/posture"
	"github.com/medgate/medgate/proxy/mask"
)

// Codec makes the filters that carry a protocol through one masked
// session, for one profile: toPeer masks the app's data on its way to the
// peer, fromPeer carries the peer's data to the app (and may watch it, as
// DICOM must to follow the association). fromPeer may be nil: the bytes
// then pass as they are. inbound says the app is the server the peer
// connected to (its answers leave); otherwise the app is the client.
type Codec func(p *mask.Profile, env mask.Env, inbound bool) (toPeer, fromPeer mask.Filter, err error)

// ProfileSource returns the masking profile a decision names.
type ProfileSource func(name string) (*mask.Profile, error)

// Reason codes of masking.
const (
	reasonUnknownProfile = "masking_profile_unavailable"
	reasonUnmaskable     = "unmaskable"
)

// masking is what a session needs to mask the data it sends.
type masking struct {
	profile          *mask.Profile
	toPeer, fromPeer mask.Filter
}

// maskingFor prepares the filters for a deidentify decision on a route
// speaking protocol. It returns a reason code when the session must be
// refused instead: data that must be masked never crosses unmasked.
func (s *Server) maskingFor(d posture.Decision, protocol string, inbound bool) (*masking, string, error) {
	if d.Verdict != posture.Deidentify {
		return nil, "", nil
	}
	codec := s.codecs[protocol]
	if codec == nil {
		return nil, reasonMaskingRequired, fmt.Errorf("route protocol %q has no codec that masks", protocolName(protocol))
	}
	if s.profiles == nil {
		return nil, reasonUnknownProfile, errors.New("no masking profiles configured")
	}
	p, err := s.profiles(d.Profile)
	if err != nil {
		return nil, reasonUnknownProfile, err
	}
	to, from, err := codec(p, s.maskEnv, inbound)
	if err != nil {
		return nil, reasonUnknownProfile, err
	}
	return &masking{profile: p, toPeer: to, fromPeer: from}, "", nil
}

// canMask reports whether sessions on a route speaking protocol can be
// de-identified.
func (s *Server) canMask(protocol string) bool { return s.codecs[protocol] != nil }

func protocolName(p string) string {
	if p == "" {
		return "tcp"
	}
	return p
}

// objectEvent records what crossed a masked session.
func (s *Server) objectEvent(ss *session) func(mask.Object) {
	return func(o mask.Object) {
		s.events(Event{Time: s.now(), Kind: "object", Route: ss.route, Direction: ss.direction, SessionID: ss.id, PeerID: ss.peerID, Object: &o})
	}
}

// flushingWriter seals every Write as its own segment at once, so a masked
// message reaches the peer without waiting for a full segment.
type flushingWriter struct{ w *stream.Writer }

func (f flushingWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.w.Flush()
	}
	return n, err
}

// tunnelWriter is what a masked session writes toward the peer: data
// frames, sealed when the session has the inner layer. Both of a
// session's filters may write to it (the answer filter's refusal goes back
// to the peer), so writes are serialized.
type tunnelWriter struct {
	mu     sync.Mutex
	w      io.Writer
	sealed *stream.Writer
	tun    tunnel
}

func newTunnelWriter(ss *session) (*tunnelWriter, error) {
	tw := &tunnelWriter{w: &frameWriter{w: ss.tun}, tun: ss.tun}
	if ss.inner != nil {
		sw, err := stream.NewWriter(tw.w, ss.inner.send, ss.inner.sendHdr)
		if err != nil {
			return nil, err
		}
		tw.sealed, tw.w = sw, flushingWriter{sw}
	}
	return tw, nil
}

func (t *tunnelWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.w.Write(p)
}

// finish ends the direction: the final segment, then the end frame.
func (t *tunnelWriter) finish() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sealed != nil {
		if err := t.sealed.Close(); err != nil {
			return err
		}
	}
	return writeFrame(t.tun, frameEnd, nil)
}

// pumpMasked runs the session's toPeer filter from the app into the
// tunnel, then ends the direction.
func (s *Server) pumpMasked(ss *session, tw *tunnelWriter, activity func(int)) (int64, error) {
	src := &countingReader{r: ss.app, activity: activity}
	var sent int64
	if err := ss.masking.toPeer(&byteCounter{w: tw, n: &sent}, src, ss.app, s.objectEvent(ss)); err != nil {
		return sent, err
	}
	return sent, tw.finish()
}

type byteCounter struct {
	w io.Writer
	n *int64
}

func (b *byteCounter) Write(p []byte) (int, error) {
	n, err := b.w.Write(p)
	*b.n += int64(n)
	return n, err
}
