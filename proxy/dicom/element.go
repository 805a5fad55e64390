package dicom

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
)

// Tags the codec treats specially.
const (
	tagItem                 = 0xFFFEE000
	tagItemDelim            = 0xFFFEE00D
	tagSeqDelim             = 0xFFFEE0DD
	tagPixelData            = 0x7FE00010
	tagPatientName          = 0x00100010
	tagPatientID            = 0x00100020
	tagStudyUID             = 0x0020000D
	tagSeriesUID            = 0x0020000E
	tagSOPInstance          = 0x00080018
	tagIdentityRem          = 0x00120062
	tagDeidMethod           = 0x00120063
	tagDeidCodeSeq          = 0x00120064
	tagCodeValue            = 0x00080100
	tagCodingScheme         = 0x00080102
	tagCodeMeaning          = 0x00080104
	tagLongitudinalModified = 0x00280303
	undefinedLength         = 0xFFFFFFFF
	maxNestingDepth         = 64
	maxHeldValue            = 1 << 20
	copyChunk               = 64 << 10
	decoderBufSize          = 64 << 10
	elementHeaderMax        = 12
)

// longVR reports whether an explicit VR has the 4-byte length form.
func longVR(vr string) bool {
	switch vr {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
		return true
	}
	return false
}

func knownVR(vr string) bool {
	switch vr {
	case "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "PN", "SH", "SL",
		"SS", "ST", "TM", "UI", "UL", "US":
		return true
	}
	return longVR(vr)
}

// header is an element, item or delimiter header.
type header struct {
	tag    uint32
	vr     string // explicit VR syntaxes only, and never for items and delimiters
	length uint32
}

// decoder reads element headers and values from a data set stream,
// counting the bytes it consumed.
type decoder struct {
	r   *bufio.Reader
	pos int64
	b   [elementHeaderMax]byte
}

func (d *decoder) full(p []byte) error {
	n, err := io.ReadFull(d.r, p)
	d.pos += int64(n)
	return err
}

// header reads the next header. It returns io.EOF when the stream ends
// before the header's first byte.
func (d *decoder) header(s syntax) (header, error) {
	b := d.b[:]
	n, err := io.ReadFull(d.r, b[:4])
	d.pos += int64(n)
	if err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return header{}, io.EOF
		}
		return header{}, d.truncated(err, "element header")
	}
	var h header
	if s.big {
		h.tag = uint32(binary.BigEndian.Uint16(b))<<16 | uint32(binary.BigEndian.Uint16(b[2:]))
	} else {
		h.tag = uint32(binary.LittleEndian.Uint16(b))<<16 | uint32(binary.LittleEndian.Uint16(b[2:]))
	}
	if h.tag>>16 == 0xFFFE || !s.explicit {
		if err := d.full(b[4:8]); err != nil {
			return header{}, d.truncated(err, "element header")
		}
		h.length = s.u32(b[4:])
		return h, nil
	}
	if err := d.full(b[4:8]); err != nil {
		return header{}, d.truncated(err, "element header")
	}
	h.vr = string(b[4:6])
	if !knownVR(h.vr) {
		return header{}, errorf(ReasonMalformedDataSet, "element %s has unknown VR 0x%02x%02x", tagString(h.tag), b[4], b[5])
	}
	if !longVR(h.vr) {
		h.length = uint32(s.u16(b[6:]))
		return h, nil
	}
	if err := d.full(b[8:12]); err != nil {
		return header{}, d.truncated(err, "element header")
	}
	h.length = s.u32(b[8:])
	return h, nil
}

func (d *decoder) truncated(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errorf(ReasonTruncated, "data set ended inside %s at offset %d", what, d.pos)
	}
	return err
}

// value reads a whole value of n bytes, at most maxHeldValue.
func (d *decoder) value(h header) ([]byte, error) {
	if h.length > maxHeldValue {
		return nil, errorf(ReasonValueTooLarge, "element %s of %d bytes is too long to mask", tagString(h.tag), h.length)
	}
	v := make([]byte, h.length)
	if err := d.full(v); err != nil {
		return nil, d.truncated(err, "element value")
	}
	return v, nil
}

// copyN streams n bytes of value to w.
func (d *decoder) copyN(w io.Writer, n uint32) error {
	c, err := io.CopyN(w, d.r, int64(n))
	d.pos += c
	if err != nil && c < int64(n) && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
		return d.truncated(err, "element value")
	}
	return err
}

// discard skips n bytes of value.
func (d *decoder) discard(n uint32) error {
	c, err := d.r.Discard(int(n))
	d.pos += int64(c)
	if err != nil {
		return d.truncated(err, "element value")
	}
	return nil
}

func (s syntax) u16(b []byte) uint16 {
	if s.big {
		return binary.BigEndian.Uint16(b)
	}
	return binary.LittleEndian.Uint16(b)
}

func (s syntax) u32(b []byte) uint32 {
	if s.big {
		return binary.BigEndian.Uint32(b)
	}
	return binary.LittleEndian.Uint32(b)
}

func (s syntax) appendU16(b []byte, v uint16) []byte {
	if s.big {
		return binary.BigEndian.AppendUint16(b, v)
	}
	return binary.LittleEndian.AppendUint16(b, v)
}

func (s syntax) appendU32(b []byte, v uint32) []byte {
	if s.big {
		return binary.BigEndian.AppendUint32(b, v)
	}
	return binary.LittleEndian.AppendUint32(b, v)
}

// appendHeader encodes a header. vr is ignored for implicit VR and for
// items and delimiters.
func (s syntax) appendHeader(b []byte, tag uint32, vr string, length uint32) []byte {
	b = s.appendU16(b, uint16(tag>>16))
	b = s.appendU16(b, uint16(tag))
	if !s.explicit || tag>>16 == 0xFFFE {
		return s.appendU32(b, length)
	}
	b = append(b, vr...)
	if longVR(vr) {
		b = append(b, 0, 0)
		return s.appendU32(b, length)
	}
	return s.appendU16(b, uint16(length))
}

// fits reports whether a value of n bytes can be encoded with vr.
func (s syntax) fits(vr string, n int) bool {
	if s.explicit && !longVR(vr) {
		return n <= 0xFFFE
	}
	return n < undefinedLength-1
}

// kind is how the codec walks an element.
type kind uint8

const (
	kindValue kind = iota
	kindSequence
	kindEncapsulated
)

// classify says how to walk the element of header h in syntax s, and in
// which syntax the items of a sequence are encoded: a UN element holding
// a sequence is implicit VR little endian inside (PS3.5 6.2.2).
func classify(s syntax, h header) (kind, syntax, error) {
	if s.explicit {
		switch {
		case h.vr == "SQ":
			return kindSequence, s, nil
		case h.vr == "UN" && (h.length == undefinedLength || dictVR(h.tag) == "SQ"):
			return kindSequence, implicitLE, nil
		case h.length == undefinedLength && h.tag == tagPixelData && (h.vr == "OB" || h.vr == "OW"):
			return kindEncapsulated, s, nil
		case h.length == undefinedLength:
			return 0, s, errorf(ReasonMalformedDataSet, "element %s with VR %s has undefined length", tagString(h.tag), h.vr)
		}
		return kindValue, s, nil
	}
	switch {
	case h.length == undefinedLength && h.tag == tagPixelData:
		return kindEncapsulated, s, nil
	case h.length == undefinedLength, dictVR(h.tag) == "SQ":
		return kindSequence, s, nil
	}
	return kindValue, s, nil
}
