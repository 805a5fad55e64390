package dicom

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"io"

	"github.com/medgate/medgate/proxy/mask"
)

// NewFilters returns the two filters of one connection, over a fresh
// Association. toPeer applies m to the data sets it carries (m nil: it
// only follows the protocol); fromPeer passes P-DATA through unchanged.
// Both follow the association and both must run, each in its own
// goroutine: each needs what the other saw. Each filter runs once.
//
// Wiring: toPeer reads the local application (src), writes toward the
// peer (dst) and refuses toward the application (back); fromPeer reads
// the peer and writes to the application. toPeer's back and fromPeer's
// dst must lead to the same stream (the application's connection): the
// pair serializes writes to it, so an A-ABORT never lands inside a PDU.
// fromPeer's back may be io.Discard.
//
// A filter returns nil when its source ends between messages (or after
// forwarding its sender's A-ABORT), an *Error wrapping mask.ErrUnmaskable
// for input it refuses (after writing an A-ABORT toward both peers), and
// other errors for failed reads and writes. Once one filter fails, the
// other's next write fails with ReasonOtherSideFailed; close both
// connections to end a filter blocked in a read.
func NewFilters(m *Masker) (toPeer, fromPeer mask.Filter) {
	return NewAssociation().Filters(m, nil)
}

// Filters returns the two filters of the association's connection:
// filter 0 (toPeer) masks with m0, filter 1 (fromPeer) with m1; a nil
// Masker passes P-DATA through unchanged. Call it once.
func (a *Association) Filters(m0, m1 *Masker) (toPeer, fromPeer mask.Filter) {
	mk := func(idx int, m *Masker) mask.Filter {
		return func(dst io.Writer, src io.Reader, back io.Writer, report func(mask.Object)) error {
			a.mu.Lock()
			used := a.used[idx]
			a.used[idx] = true
			a.mu.Unlock()
			if used {
				return errors.New("dicom: filter used twice")
			}
			d := &direction{a: a, idx: idx, m: m, dst: dst, back: back, report: report,
				in: bufio.NewReaderSize(src, decoderBufSize)}
			return d.run()
		}
	}
	return mk(0, m0), mk(1, m1)
}

// direction is one running filter.
type direction struct {
	a      *Association
	idx    int
	m      *Masker
	dst    io.Writer
	back   io.Writer
	report func(mask.Object)
	in     *bufio.Reader

	// P-DATA-TF input state: bytes left in the current PDU, the current
	// PDV's header and the bytes left of its fragment.
	pduLeft uint32
	pdvLeft uint32
	ctx     uint8
	cmd     bool
	last    bool
	inMsg   bool

	hb   [HeaderLen]byte
	dsr  *bufio.Reader
	body []byte
}

func (d *direction) run() error {
	err := d.loop()
	if err == nil {
		return nil
	}
	var reason byte
	var e *Error
	if errors.As(err, &e) {
		if e.Reason == ReasonOtherSideFailed {
			return err
		}
		reason = abortReason(e.Reason)
	}
	d.a.setFailed()
	d.a.abortTo(d.idx, d.dst, reason)
	d.a.abortTo(1-d.idx, d.back, reason)
	return err
}

func (d *direction) loop() error {
	for {
		p, err := d.next()
		if err == io.EOF {
			if d.inMsg {
				return errorf(ReasonTruncated, "stream ended inside a DIMSE message")
			}
			return nil
		}
		if err != nil {
			return err
		}
		if p != nil {
			if err := d.forward(p); err != nil {
				return err
			}
			continue
		}
		if err := d.message(); err != nil {
			return err
		}
	}
}

// forward records an association PDU and passes it on unchanged.
func (d *direction) forward(p *PDU) error {
	if d.inMsg && p.Type != TypeAbort {
		return errorf(ReasonUnexpectedPDU, "%v inside a DIMSE message", p.Type)
	}
	if err := d.a.record(d.idx, p); err != nil {
		return err
	}
	return d.a.write(d.idx, d.dst, p.Bytes(), false)
}

// next reads up to the next PDV header (returning nil) or the next PDU
// that is not a P-DATA-TF. A pass-through direction forwards P-DATA-TF
// PDUs itself and never returns at a PDV.
func (d *direction) next() (*PDU, error) {
	for {
		if d.pduLeft > 0 {
			if d.pduLeft < 6 {
				return nil, errorf(ReasonMalformedPDV, "%d bytes left in a P-DATA-TF, short of a PDV header", d.pduLeft)
			}
			var h [6]byte
			if _, err := io.ReadFull(d.in, h[:]); err != nil {
				return nil, readErr(err, "pdv header")
			}
			ctx, mch, n, err := pdvHeader(h[:], d.pduLeft-4)
			if err != nil {
				return nil, err
			}
			d.pduLeft -= 6 + n
			d.ctx, d.cmd, d.last, d.pdvLeft = ctx, mch&1 != 0, mch&2 != 0, n
			return nil, nil
		}
		if err := readHeader(d.in, d.hb[:]); err != nil {
			return nil, err
		}
		t, n := PDUType(d.hb[0]), binary.BigEndian.Uint32(d.hb[2:])
		if err := checkPDUHeader(t, n, d.a.receiverMax(d.idx)); err != nil {
			return nil, err
		}
		if t != TypePData {
			data := make([]byte, n)
			if _, err := io.ReadFull(d.in, data); err != nil {
				return nil, readErr(err, "pdu body")
			}
			return &PDU{Type: t, Data: data}, nil
		}
		if !d.a.established() {
			return nil, errorf(ReasonUnexpectedPDU, "P-DATA-TF before the association is established")
		}
		if d.m == nil {
			if err := d.passPData(n); err != nil {
				return nil, err
			}
			continue
		}
		d.pduLeft = n
	}
}

// passPData forwards a P-DATA-TF PDU of n bytes unchanged: whole if it is
// small, in pieces otherwise.
func (d *direction) passPData(n uint32) error {
	if n <= DefaultPDataPDU {
		if cap(d.body) < HeaderLen+int(n) {
			d.body = make([]byte, HeaderLen+DefaultPDataPDU)
		}
		b := d.body[:HeaderLen+int(n)]
		copy(b, d.hb[:])
		if _, err := io.ReadFull(d.in, b[HeaderLen:]); err != nil {
			return readErr(err, "pdu body")
		}
		return d.a.write(d.idx, d.dst, b, false)
	}
	if err := d.a.write(d.idx, d.dst, d.hb[:], true); err != nil {
		return err
	}
	if cap(d.body) < copyChunk {
		d.body = make([]byte, HeaderLen+DefaultPDataPDU)
	}
	for n > 0 {
		b := d.body[:min(n, copyChunk)]
		if _, err := io.ReadFull(d.in, b); err != nil {
			return readErr(err, "pdu body")
		}
		n -= uint32(len(b))
		if err := d.a.write(d.idx, d.dst, b, n > 0); err != nil {
			return err
		}
	}
	return nil
}

// errSenderAborted ends a message its sender aborted: the A-ABORT went on.
var errSenderAborted = errors.New("dicom: sender aborted the association")

// message masks one DIMSE message whose first PDV header was just read.
func (d *direction) message() error {
	if !d.cmd {
		return errorf(ReasonMalformedPDV, "data set fragment on context %d without a command", d.ctx)
	}
	d.inMsg = true
	ctx := d.ctx
	_, ts, ok := d.a.Context(ctx)
	if !ok {
		return errorf(ReasonMalformedPDV, "presentation context %d was not accepted", ctx)
	}
	var cmdBuf []byte
	for {
		if len(cmdBuf)+int(d.pdvLeft) > maxCommandSet {
			return errorf(ReasonMalformedCommand, "command set longer than %d bytes", maxCommandSet)
		}
		n := len(cmdBuf)
		cmdBuf = append(cmdBuf, make([]byte, d.pdvLeft)...)
		if _, err := io.ReadFull(d.in, cmdBuf[n:]); err != nil {
			return readErr(err, "command fragment")
		}
		d.pdvLeft = 0
		if d.last {
			break
		}
		if err := d.nextFragment(ctx, true); err != nil {
			return d.endAborted(err)
		}
	}
	c, err := parseCommand(cmdBuf)
	if err != nil {
		return err
	}
	field := c.field()
	// A Restorer parses only the identifiers of requests; every other
	// data set passes through as it came.
	parse := !d.m.restore || field == CFindRQ || field == CGetRQ || field == CMoveRQ
	var s syntax
	if c.hasDataSet() && parse {
		if s, ok = syntaxOf(ts); !ok {
			return errorf(ReasonTransferSyntax, "transfer syntax %s of context %d cannot be masked", ts, ctx)
		}
	}
	for _, t := range []uint32{tagAffectedSOPInstance, tagRequestedSOPInst} {
		v, ok := c.get(t)
		if !ok || len(trimValue(v)) == 0 {
			continue
		}
		switch {
		case d.m.restore:
			if o, ok := d.m.index.get(trimValue(v)); ok {
				c.set(t, pad("UI", []byte(o)))
			}
		case d.m.remapsInstances():
			u := d.m.keyer.UID(trimValue(v))
			if d.m.index != nil {
				d.m.index.put(u, trimValue(v))
			}
			c.set(t, pad("UI", []byte(u)))
		}
	}
	w := d.newWriter(ctx, true, nil)
	if _, err := w.Write(c.encode()); err != nil {
		return err
	}
	if err := w.close(); err != nil {
		return err
	}
	if !c.hasDataSet() {
		d.inMsg = false
		return nil
	}
	// The data set: its first fragment may already be in this PDU.
	if err := d.nextFragment(ctx, false); err != nil {
		return d.endAborted(err)
	}
	h := sha256.New()
	w = d.newWriter(ctx, false, h)
	if d.dsr == nil {
		d.dsr = bufio.NewReaderSize(fragmentReader{d, ctx}, decoderBufSize)
	} else {
		d.dsr.Reset(fragmentReader{d, ctx})
	}
	if !parse {
		if _, err := io.Copy(w, d.dsr); err != nil {
			return d.endAborted(err)
		}
		if err := w.close(); err != nil {
			return err
		}
		d.inMsg = false
		return nil
	}
	obj := d.m.object(CommandName(field))
	query := field == CFindRQ || field == CGetRQ || field == CMoveRQ
	if err := d.m.maskDataSet(w, d.dsr, s, query, field == CStoreRQ, &obj); err != nil {
		return d.endAborted(err)
	}
	if err := w.close(); err != nil {
		return err
	}
	d.inMsg = false
	obj.SHA256 = hex.EncodeToString(h.Sum(nil))
	if d.report != nil && !d.m.restore {
		d.report(obj)
	}
	return nil
}

// endAborted turns a sender's A-ABORT inside a message into the end of
// the stream: the abort was forwarded, nothing else will follow.
func (d *direction) endAborted(err error) error {
	if errors.Is(err, errSenderAborted) {
		d.inMsg = false
		_, _ = io.Copy(io.Discard, d.in)
		return nil
	}
	return err
}

// nextFragment reads the next PDV header of the message on context ctx,
// which must carry a command fragment (cmd) or a data set fragment.
func (d *direction) nextFragment(ctx uint8, cmd bool) error {
	p, err := d.next()
	if err == io.EOF {
		return errorf(ReasonTruncated, "stream ended inside a DIMSE message")
	}
	if err != nil {
		return err
	}
	if p != nil {
		if p.Type == TypeAbort {
			if err := d.forward(p); err != nil {
				return err
			}
			return errSenderAborted
		}
		return errorf(ReasonUnexpectedPDU, "%v inside a DIMSE message", p.Type)
	}
	if d.ctx != ctx || d.cmd != cmd {
		return errorf(ReasonMalformedPDV, "fragment on context %d (command %v) inside a message on context %d", d.ctx, d.cmd, ctx)
	}
	return nil
}

// fragmentReader reads a message's data set across its PDVs, ending at
// the end of its last fragment.
type fragmentReader struct {
	d   *direction
	ctx uint8
}

func (f fragmentReader) Read(p []byte) (int, error) {
	d := f.d
	for d.pdvLeft == 0 {
		if d.last {
			return 0, io.EOF
		}
		if err := d.nextFragment(f.ctx, false); err != nil {
			return 0, err
		}
	}
	if uint32(len(p)) > d.pdvLeft {
		p = p[:d.pdvLeft]
	}
	n, err := d.in.Read(p)
	d.pdvLeft -= uint32(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return n, errorf(ReasonTruncated, "stream ended inside a PDV")
		}
		return n, err
	}
	return n, nil
}

// pdvWriter writes a command or data set as P-DATA-TF PDUs of one PDV
// each, within the receiver's maximum length. It holds one PDU back, so
// the last one carries the last-fragment bit.
type pdvWriter struct {
	d     *direction
	ctx   uint8
	cmd   bool
	frag  int // fragment bytes per PDU
	buf   []byte
	h     hash.Hash
	wrote bool
}

// pduHeaders is the PDU header and the PDV header in front of a fragment.
const pduHeaders = HeaderLen + 6

func (d *direction) newWriter(ctx uint8, cmd bool, h hash.Hash) *pdvWriter {
	max := d.a.receiverMax(d.idx)
	switch {
	case max == 0:
		max = DefaultPDataPDU
	case max > 1<<20:
		max = 1 << 20
	}
	return &pdvWriter{d: d, ctx: ctx, cmd: cmd, frag: int(max) - 6, h: h,
		buf: make([]byte, pduHeaders, pduHeaders+int(max)-6)}
}

func (w *pdvWriter) full() bool { return len(w.buf)-pduHeaders == w.frag }

func (w *pdvWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if w.full() {
			if err := w.flush(false); err != nil {
				return n - len(p), err
			}
		}
		k := min(len(p), w.frag-(len(w.buf)-pduHeaders))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
	}
	return n, nil
}

// ReadFrom fills PDUs straight from r, saving a copy of large values.
func (w *pdvWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if w.full() {
			if err := w.flush(false); err != nil {
				return total, err
			}
		}
		room := w.buf[len(w.buf):cap(w.buf)]
		n, err := r.Read(room)
		w.buf = w.buf[:len(w.buf)+n]
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (w *pdvWriter) flush(last bool) error {
	frag := w.buf[pduHeaders:]
	if w.h != nil {
		w.h.Write(frag)
	}
	b := w.buf
	b[0], b[1] = byte(TypePData), 0
	binary.BigEndian.PutUint32(b[2:], uint32(len(frag)+6))
	binary.BigEndian.PutUint32(b[6:], uint32(len(frag)+2))
	b[10] = w.ctx
	var mch byte
	if w.cmd {
		mch |= 1
	}
	if last {
		mch |= 2
	}
	b[11] = mch
	if err := w.d.a.write(w.d.idx, w.d.dst, b, false); err != nil {
		return err
	}
	w.buf = w.buf[:pduHeaders]
	return nil
}

func (w *pdvWriter) close() error { return w.flush(true) }

// Codec makes the filters of one connection on a route masked with p:
// the shape of the data path's codec registry. toPeer masks what the
// local application sends; fromPeer carries the answers unchanged while
// following the association. It compiles p on every call (about 0.2 ms
// for the basic profile); callers with many connections may keep a
// Masker per profile version and call NewFilters instead.
func Codec(p *mask.Profile, env mask.Env) (toPeer, fromPeer mask.Filter, err error) {
	m, err := NewMasker(p, env)
	if err != nil {
		return nil, nil, err
	}
	toPeer, fromPeer = NewFilters(m)
	return toPeer, fromPeer, nil
}
