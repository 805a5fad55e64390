package proxy

import (
	"errors"
	"fmt"
	"io"

	"github.com/medgate/medgate/crypto/stream"
	"github.com/medgate/medgate/posture"
	"github.com/medgate/medgate/proxy/mask"
)

// Codec makes the filters that carry a protocol through a masked session,
// for one profile: toPeer masks the app's data on its way to the peer,
// fromPeer carries the peer's answers to the app (and may watch them, as
// DICOM must to follow the association). fromPeer may be nil: the bytes
// then pass as they are.
type Codec func(p *mask.Profile, env mask.Env) (toPeer, fromPeer mask.Filter, err error)

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
func (s *Server) maskingFor(d posture.Decision, protocol string) (*masking, string, error) {
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
	to, from, err := codec(p, s.maskEnv)
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

// pumpMasked runs the session's toPeer filter from the app into the
// tunnel, sealed when the session has the inner layer, then ends the
// direction.
func (s *Server) pumpMasked(ss *session, activity func(int)) (int64, error) {
	src := &countingReader{r: ss.app, activity: activity}
	var dst io.Writer = &frameWriter{w: ss.tun}
	var sw *stream.Writer
	if ss.inner != nil {
		var err error
		if sw, err = stream.NewWriter(dst, ss.inner.send, ss.inner.sendHdr); err != nil {
			return 0, err
		}
		dst = flushingWriter{sw}
	}
	cw := &countingWriter{w: dst, activity: func(int) {}}
	var sent int64
	counted := &byteCounter{w: cw, n: &sent}
	if err := ss.masking.toPeer(counted, src, ss.app, s.objectEvent(ss)); err != nil {
		return sent, err
	}
	if sw != nil {
		if err := sw.Close(); err != nil {
			return sent, err
		}
	}
	return sent, writeFrame(ss.tun, frameEnd, nil)
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
