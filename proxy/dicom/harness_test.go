package dicom

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/medgate/medgate/proxy/mask"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (a, b *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		ch <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-ch
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// harness is an SCU (app) and an SCP (peer) joined by a pair of filters
// on loopback sockets: app <-> [toPeer, fromPeer] <-> peer.
type harness struct {
	app, peer *net.TCPConn
	appR      *bufio.Reader
	peerR     *bufio.Reader
	assoc     *Association
	errs      chan error // toPeer's, then fromPeer's (in the order they end)
	toErr     chan error
	objects   chan mask.Object
}

func newHarness(t testing.TB, toMasker, fromMasker *Masker) *harness {
	t.Helper()
	app, relayApp := tcpPair(t)
	relayPeer, peer := tcpPair(t)
	h := &harness{app: app, peer: peer, appR: bufio.NewReader(app), peerR: bufio.NewReader(peer),
		assoc: NewAssociation(), toErr: make(chan error, 1), errs: make(chan error, 2), objects: make(chan mask.Object, 100)}
	toPeer, fromPeer := h.assoc.Filters(toMasker, fromMasker)
	report := func(o mask.Object) { h.objects <- o }
	go func() {
		err := toPeer(relayPeer, relayApp, relayApp, report)
		h.toErr <- err
		relayPeer.CloseWrite()
	}()
	go func() {
		err := fromPeer(relayApp, relayPeer, relayPeer, report)
		h.errs <- err
		relayApp.CloseWrite()
	}()
	return h
}

func (h *harness) toPeerErr(t testing.TB) error {
	t.Helper()
	select {
	case err := <-h.toErr:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("toPeer filter did not end")
	}
	return nil
}

func readPDU(t testing.TB, r io.Reader) *PDU {
	t.Helper()
	p, err := ReadPDU(r, 0)
	if err != nil {
		t.Fatalf("read PDU: %v", err)
	}
	return p
}

// associate runs an association through the harness: the app proposes
// contexts (ID 1, 3, ...: one per transfer syntax) for abstract, the peer
// accepts each with its syntax, announcing peerMax; the app announces
// appMax.
func (h *harness) associate(t testing.TB, abstract string, syntaxes []string, appMax, peerMax uint32) {
	t.Helper()
	rq := buildAssociate(TypeAssociateRQ, abstract, syntaxes, appMax, 0)
	if _, err := h.app.Write(rq); err != nil {
		t.Fatal(err)
	}
	if got := readPDU(t, h.peerR); string(got.Bytes()) != string(rq) {
		t.Fatal("A-ASSOCIATE-RQ changed on its way")
	}
	ac := buildAssociate(TypeAssociateAC, abstract, syntaxes, peerMax, 0)
	if _, err := h.peer.Write(ac); err != nil {
		t.Fatal(err)
	}
	if got := readPDU(t, h.appR); string(got.Bytes()) != string(ac) {
		t.Fatal("A-ASSOCIATE-AC changed on its way")
	}
}

func item(typ byte, body []byte) []byte {
	b := []byte{typ, 0, 0, 0}
	binary.BigEndian.PutUint16(b[2:], uint16(len(body)))
	return append(b, body...)
}

// buildAssociate builds an A-ASSOCIATE-RQ or AC with one presentation
// context per syntax (IDs 1, 3, 5, ...); an AC accepts each with result.
func buildAssociate(t PDUType, abstract string, syntaxes []string, max uint32, result byte) []byte {
	body := make([]byte, 68)
	binary.BigEndian.PutUint16(body, 1)
	copy(body[4:20], "CALLED          ")
	copy(body[20:36], "CALLING         ")
	body = append(body, item(itemAppContext, []byte("1.2.840.10008.3.1.1.1"))...)
	for i, ts := range syntaxes {
		id := byte(2*i + 1)
		if t == TypeAssociateRQ {
			pc := []byte{id, 0, 0, 0}
			pc = append(pc, item(itemAbstract, []byte(abstract))...)
			pc = append(pc, item(itemTransfer, []byte(ts))...)
			body = append(body, item(itemPresCtxRQ, pc)...)
		} else {
			pc := []byte{id, 0, result, 0}
			pc = append(pc, item(itemTransfer, []byte(ts))...)
			body = append(body, item(itemPresCtxAC, pc)...)
		}
	}
	ml := binary.BigEndian.AppendUint32(nil, max)
	ui := item(itemMaxLength, ml)
	ui = append(ui, item(itemImplClass, []byte("1.2.3.4"))...)
	body = append(body, item(itemUserInfo, ui)...)
	return (&PDU{Type: t, Data: body}).Bytes()
}

// buildCommand encodes a command set.
func buildCommand(field uint16, msgID uint16, sopClass, sopInstance string, withDataSet bool) []byte {
	c := &command{}
	u16 := func(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
	c.elems = append(c.elems, commandElement{tagAffectedSOPClass, pad("UI", []byte(sopClass))})
	c.elems = append(c.elems, commandElement{tagCommandField, u16(field)})
	if field&0x8000 == 0 {
		c.elems = append(c.elems, commandElement{0x00000110, u16(msgID)})
	} else {
		c.elems = append(c.elems, commandElement{0x00000120, u16(msgID)})
	}
	ds := uint16(noDataSet)
	if withDataSet {
		ds = 0
	}
	c.elems = append(c.elems, commandElement{tagCommandDataSetType, u16(ds)})
	if field&0x8000 != 0 {
		c.elems = append(c.elems, commandElement{0x00000900, u16(0)})
	}
	if sopInstance != "" {
		c.elems = append(c.elems, commandElement{tagAffectedSOPInstance, pad("UI", []byte(sopInstance))})
	}
	return c.encode()
}

// pdvPlan says how a sender cuts a message into PDVs and PDUs.
type pdvPlan struct {
	frag     int    // fragment size
	perPDU   int    // PDVs per PDU
	together bool   // command and data set PDVs may share a PDU
	max      uint32 // the receiver's maximum length, 0 for none
}

// encodeMessage cuts a command and a data set into P-DATA-TF PDUs.
func encodeMessage(ctx uint8, cmd, ds []byte, plan pdvPlan) []byte {
	type pdv struct {
		cmd, last bool
		b         []byte
	}
	var pdvs []pdv
	frag := plan.frag
	if plan.max > 0 {
		frag = min(frag, int(plan.max)-6)
	}
	cut := func(b []byte, isCmd bool) {
		for {
			n := min(frag, len(b))
			pdvs = append(pdvs, pdv{isCmd, n == len(b), b[:n]})
			b = b[n:]
			if len(b) == 0 {
				return
			}
		}
	}
	cut(cmd, true)
	if ds != nil {
		cut(ds, false)
	}
	var out []byte
	for i := 0; i < len(pdvs); {
		var body []byte
		for j := 0; j < plan.perPDU && i < len(pdvs); j++ {
			if j > 0 && !plan.together && pdvs[i].cmd != pdvs[i-1].cmd {
				break
			}
			if j > 0 && plan.max > 0 && len(body)+6+len(pdvs[i].b) > int(plan.max) {
				break
			}
			body = AppendPDV(body, ctx, pdvs[i].cmd, pdvs[i].last, pdvs[i].b)
			i++
		}
		out = append(out, (&PDU{Type: TypePData, Data: body}).Bytes()...)
	}
	return out
}

// readMessage reads P-DATA-TF PDUs until a message is complete, checking
// every PDU against max; it returns the command and data set.
func readMessage(t testing.TB, r io.Reader, max uint32) (cmd, ds []byte, pdus int) {
	t.Helper()
	var hasDS, cmdDone bool
	for {
		p, err := ReadPDU(r, 0)
		if err != nil {
			t.Fatalf("read PDU: %v", err)
		}
		if p.Type != TypePData {
			t.Fatalf("got %v inside a message", p.Type)
		}
		if max > 0 && uint32(len(p.Data)) > max {
			t.Fatalf("PDU of %d bytes exceeds the receiver's maximum %d", len(p.Data), max)
		}
		pdus++
		pdvs, err := ParsePDVs(p.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range pdvs {
			if v.Command {
				cmd = append(cmd, v.Data...)
				if v.Last {
					cmdDone = true
					c, err := parseCommand(cmd)
					if err != nil {
						t.Fatal(err)
					}
					hasDS = c.hasDataSet()
					if !hasDS {
						return cmd, nil, pdus
					}
				}
				continue
			}
			if !cmdDone {
				t.Fatal("data set fragment before the command ended")
			}
			ds = append(ds, v.Data...)
			if v.Last {
				return cmd, ds, pdus
			}
		}
	}
}

// expectAbort reads until an A-ABORT and returns the data set fragments
// that came before it.
func expectAbort(t testing.TB, r io.Reader) []byte {
	t.Helper()
	var ds []byte
	for {
		p, err := ReadPDU(r, 0)
		if err != nil {
			t.Fatalf("no A-ABORT: %v", err)
		}
		if p.Type == TypeAbort {
			return ds
		}
		if p.Type == TypePData {
			pdvs, _ := ParsePDVs(p.Data)
			for _, v := range pdvs {
				if !v.Command {
					ds = append(ds, v.Data...)
				}
			}
		}
	}
}

func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
