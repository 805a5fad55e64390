package dicom

import (
	"encoding/binary"
	"errors"
	"io"
	"strings"
)

// PDUType is the first byte of a PDU (PS3.8 9.3.1).
type PDUType uint8

// PDU types.
const (
	TypeAssociateRQ PDUType = 0x01
	TypeAssociateAC PDUType = 0x02
	TypeAssociateRJ PDUType = 0x03
	TypePData       PDUType = 0x04
	TypeReleaseRQ   PDUType = 0x05
	TypeReleaseRP   PDUType = 0x06
	TypeAbort       PDUType = 0x07
)

func (t PDUType) String() string {
	switch t {
	case TypeAssociateRQ:
		return "A-ASSOCIATE-RQ"
	case TypeAssociateAC:
		return "A-ASSOCIATE-AC"
	case TypeAssociateRJ:
		return "A-ASSOCIATE-RJ"
	case TypePData:
		return "P-DATA-TF"
	case TypeReleaseRQ:
		return "A-RELEASE-RQ"
	case TypeReleaseRP:
		return "A-RELEASE-RP"
	case TypeAbort:
		return "A-ABORT"
	}
	return "unknown"
}

// Size limits.
const (
	// HeaderLen is the length of a PDU header: type, reserved, length.
	HeaderLen = 6
	// MaxAssociatePDU bounds A-ASSOCIATE-RQ and AC PDUs. 128 presentation
	// contexts with many transfer syntaxes each and user identity
	// sub-items fit well within it.
	MaxAssociatePDU = 1 << 20
	// MaxPDataPDU bounds P-DATA-TF PDUs whatever the receiver announced
	// (a maximum length of 0 means "unlimited").
	MaxPDataPDU = 64 << 20
	// DefaultPDataPDU is the size of the P-DATA-TF PDUs the codec writes
	// toward a receiver that announced no limit.
	DefaultPDataPDU = 256 << 10
	// minPDataPDU is the least maximum length the codec accepts from a
	// peer: a PDV header and a few bytes of fragment.
	minPDataPDU = 64
)

// PDU is one whole PDU: its type and its variable field (everything after
// the 6-byte header).
type PDU struct {
	Type PDUType
	Data []byte
}

// Bytes returns the PDU as it goes on the wire.
func (p *PDU) Bytes() []byte {
	b := make([]byte, HeaderLen+len(p.Data))
	b[0] = byte(p.Type)
	binary.BigEndian.PutUint32(b[2:], uint32(len(p.Data)))
	copy(b[HeaderLen:], p.Data)
	return b
}

// ReadPDU reads one whole PDU from r. It refuses a PDU whose variable
// field is longer than max, an unknown PDU type and a fixed-size PDU of
// the wrong size, with an *Error. It returns io.EOF when r ends before
// the first byte, and an *Error with ReasonTruncated when it ends inside
// the PDU.
func ReadPDU(r io.Reader, max uint32) (*PDU, error) {
	var h [HeaderLen]byte
	if err := readHeader(r, h[:]); err != nil {
		return nil, err
	}
	t, n := PDUType(h[0]), binary.BigEndian.Uint32(h[2:])
	if err := checkPDUHeader(t, n, max); err != nil {
		return nil, err
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, readErr(err, "pdu body")
	}
	return &PDU{Type: t, Data: data}, nil
}

// readHeader reads a PDU header: io.EOF before its first byte, a
// truncation error inside it.
func readHeader(r io.Reader, h []byte) error {
	n, err := io.ReadFull(r, h)
	if err == io.EOF && n == 0 {
		return io.EOF
	}
	if err != nil {
		return readErr(err, "pdu header")
	}
	return nil
}

// readErr turns a short read into a truncation error and passes other
// read errors through.
func readErr(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errorf(ReasonTruncated, "stream ended inside %s", what)
	}
	return err
}

func checkPDUHeader(t PDUType, n, max uint32) error {
	switch t {
	case TypeAssociateRQ, TypeAssociateAC:
		if n > MaxAssociatePDU {
			return errorf(ReasonPDUTooLarge, "%v of %d bytes exceeds %d", t, n, MaxAssociatePDU)
		}
		if n < 68 {
			return errorf(ReasonMalformedPDU, "%v of %d bytes is shorter than its fixed fields", t, n)
		}
	case TypeAssociateRJ, TypeReleaseRQ, TypeReleaseRP, TypeAbort:
		if n != 4 {
			return errorf(ReasonMalformedPDU, "%v length %d, want 4", t, n)
		}
	case TypePData:
		if max == 0 || max > MaxPDataPDU {
			max = MaxPDataPDU
		}
		if n > max {
			return errorf(ReasonPDUTooLarge, "P-DATA-TF of %d bytes exceeds the receiver's maximum %d", n, max)
		}
		if n < 6 {
			return errorf(ReasonMalformedPDU, "P-DATA-TF of %d bytes holds no PDV", n)
		}
	default:
		return errorf(ReasonMalformedPDU, "unknown PDU type 0x%02x", uint8(t))
	}
	return nil
}

// Abort returns an A-ABORT PDU from the service provider (source 2) with
// the given reason/diag (PS3.8 9.3.8).
func Abort(reason byte) []byte {
	return []byte{byte(TypeAbort), 0, 0, 0, 0, 4, 0, 0, 2, reason}
}

// PresentationContext is one presentation context of an association.
type PresentationContext struct {
	ID uint8
	// AbstractSyntax is the SOP class proposed (A-ASSOCIATE-RQ only).
	AbstractSyntax string
	// TransferSyntaxes are those proposed in an A-ASSOCIATE-RQ, or the
	// one accepted in an A-ASSOCIATE-AC.
	TransferSyntaxes []string
	// Result is the A-ASSOCIATE-AC result: 0 acceptance, 1 user
	// rejection, 2 no reason, 3 abstract syntax not supported, 4 transfer
	// syntaxes not supported.
	Result uint8
}

// Associate is what the codec reads of an A-ASSOCIATE-RQ or AC.
type Associate struct {
	Type               PDUType
	ProtocolVersion    uint16
	CalledAE           string
	CallingAE          string
	ApplicationContext string
	Contexts           []PresentationContext
	// MaxLength is the maximum length of the variable field of the
	// P-DATA-TF PDUs the sender of this PDU will receive; 0 means no
	// limit (or no maximum length sub-item).
	MaxLength              uint32
	ImplementationClassUID string
	ImplementationVersion  string
}

// Item types of A-ASSOCIATE PDUs (PS3.8 9.3.2, 9.3.3, annex D).
const (
	itemAppContext  = 0x10
	itemPresCtxRQ   = 0x20
	itemPresCtxAC   = 0x21
	itemAbstract    = 0x30
	itemTransfer    = 0x40
	itemUserInfo    = 0x50
	itemMaxLength   = 0x51
	itemImplClass   = 0x52
	itemImplVersion = 0x55
)

// ParseAssociate parses the variable field of an A-ASSOCIATE-RQ (t ==
// TypeAssociateRQ) or AC. Items it does not need are skipped; items that
// overrun their container are an *Error.
func ParseAssociate(t PDUType, data []byte) (*Associate, error) {
	if t != TypeAssociateRQ && t != TypeAssociateAC {
		return nil, errorf(ReasonMalformedPDU, "%v is not an A-ASSOCIATE PDU", t)
	}
	if len(data) < 68 {
		return nil, errorf(ReasonMalformedPDU, "%v of %d bytes is shorter than its fixed fields", t, len(data))
	}
	a := &Associate{
		Type:            t,
		ProtocolVersion: binary.BigEndian.Uint16(data),
		CalledAE:        strings.TrimSpace(string(data[4:20])),
		CallingAE:       strings.TrimSpace(string(data[20:36])),
	}
	err := walkItems(data[68:], func(typ byte, body []byte) error {
		switch typ {
		case itemAppContext:
			a.ApplicationContext = trimUID(body)
		case itemPresCtxRQ, itemPresCtxAC:
			if (typ == itemPresCtxRQ) != (t == TypeAssociateRQ) {
				return errorf(ReasonMalformedPDU, "%v holds presentation context item 0x%02x", t, typ)
			}
			pc, err := parsePresCtx(typ, body)
			if err != nil {
				return err
			}
			a.Contexts = append(a.Contexts, pc)
		case itemUserInfo:
			return walkItems(body, func(typ byte, body []byte) error {
				switch typ {
				case itemMaxLength:
					if len(body) != 4 {
						return errorf(ReasonMalformedPDU, "maximum length sub-item of %d bytes", len(body))
					}
					a.MaxLength = binary.BigEndian.Uint32(body)
				case itemImplClass:
					a.ImplementationClassUID = trimUID(body)
				case itemImplVersion:
					a.ImplementationVersion = strings.TrimSpace(string(body))
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

func parsePresCtx(typ byte, body []byte) (PresentationContext, error) {
	if len(body) < 4 {
		return PresentationContext{}, errorf(ReasonMalformedPDU, "presentation context item of %d bytes", len(body))
	}
	pc := PresentationContext{ID: body[0]}
	if typ == itemPresCtxAC {
		pc.Result = body[2]
	}
	err := walkItems(body[4:], func(st byte, sb []byte) error {
		switch st {
		case itemAbstract:
			pc.AbstractSyntax = trimUID(sb)
		case itemTransfer:
			pc.TransferSyntaxes = append(pc.TransferSyntaxes, trimUID(sb))
		}
		return nil
	})
	return pc, err
}

// walkItems calls f with the type and body of each item of b: type (1),
// reserved (1), length (2, big endian), body.
func walkItems(b []byte, f func(typ byte, body []byte) error) error {
	for len(b) > 0 {
		if len(b) < 4 {
			return errorf(ReasonMalformedPDU, "item header of %d bytes", len(b))
		}
		n := int(binary.BigEndian.Uint16(b[2:]))
		if 4+n > len(b) {
			return errorf(ReasonMalformedPDU, "item 0x%02x of %d bytes overruns its container of %d", b[0], n, len(b)-4)
		}
		if err := f(b[0], b[4:4+n]); err != nil {
			return err
		}
		b = b[4+n:]
	}
	return nil
}

func trimUID(b []byte) string { return strings.TrimRight(string(b), "\x00 ") }

// PDV is one presentation data value item of a P-DATA-TF PDU.
type PDV struct {
	ContextID uint8
	// Command is bit 0 of the message control header: the fragment is
	// part of a command set, not a data set.
	Command bool
	// Last is bit 1: the last fragment of the command or data set.
	Last bool
	Data []byte
}

// pdvHeader parses the 6-byte PDV item header: item length, context ID,
// message control header.
func pdvHeader(h []byte, room uint32) (ctx uint8, mch byte, n uint32, err error) {
	l := binary.BigEndian.Uint32(h)
	if l < 2 {
		return 0, 0, 0, errorf(ReasonMalformedPDV, "PDV item length %d", l)
	}
	if l > room {
		return 0, 0, 0, errorf(ReasonMalformedPDV, "PDV item of %d bytes overruns its PDU (%d left)", l, room)
	}
	if h[5]&^3 != 0 {
		return 0, 0, 0, errorf(ReasonMalformedPDV, "message control header 0x%02x has reserved bits set", h[5])
	}
	return h[4], h[5], l - 2, nil
}

// ParsePDVs splits the variable field of a P-DATA-TF PDU into its PDVs.
// The PDVs share data's memory.
func ParsePDVs(data []byte) ([]PDV, error) {
	var out []PDV
	if len(data) == 0 {
		return nil, errorf(ReasonMalformedPDU, "P-DATA-TF holds no PDV")
	}
	for len(data) > 0 {
		if len(data) < 6 {
			return nil, errorf(ReasonMalformedPDV, "PDV header of %d bytes", len(data))
		}
		ctx, mch, n, err := pdvHeader(data, uint32(len(data)-4))
		if err != nil {
			return nil, err
		}
		out = append(out, PDV{ContextID: ctx, Command: mch&1 != 0, Last: mch&2 != 0, Data: data[6 : 6+n]})
		data = data[6+n:]
	}
	return out, nil
}

// AppendPDV appends a PDV item for fragment to b.
func AppendPDV(b []byte, ctx uint8, command, last bool, fragment []byte) []byte {
	var mch byte
	if command {
		mch |= 1
	}
	if last {
		mch |= 2
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(fragment)+2))
	b = append(b, ctx, mch)
	return append(b, fragment...)
}
