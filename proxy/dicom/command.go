package dicom

import (
	"encoding/binary"
	"fmt"
)

// Command set elements (PS3.7 E.1).
const (
	tagCommandGroupLength  = 0x00000000
	tagAffectedSOPClass    = 0x00000002
	tagCommandField        = 0x00000100
	tagCommandDataSetType  = 0x00000800
	tagAffectedSOPInstance = 0x00001000
	tagRequestedSOPInst    = 0x00001001
	noDataSet              = 0x0101
	maxCommandSet          = 64 << 10
)

// Command fields.
const (
	CStoreRQ = 0x0001
	CGetRQ   = 0x0010
	CFindRQ  = 0x0020
	CMoveRQ  = 0x0021
	CEchoRQ  = 0x0030
	CCancel  = 0x0FFF
)

var commandNames = map[uint16]string{
	0x0001: "C-STORE-RQ", 0x8001: "C-STORE-RSP",
	0x0010: "C-GET-RQ", 0x8010: "C-GET-RSP",
	0x0020: "C-FIND-RQ", 0x8020: "C-FIND-RSP",
	0x0021: "C-MOVE-RQ", 0x8021: "C-MOVE-RSP",
	0x0030: "C-ECHO-RQ", 0x8030: "C-ECHO-RSP",
	0x0100: "N-EVENT-REPORT-RQ", 0x8100: "N-EVENT-REPORT-RSP",
	0x0110: "N-GET-RQ", 0x8110: "N-GET-RSP",
	0x0120: "N-SET-RQ", 0x8120: "N-SET-RSP",
	0x0130: "N-ACTION-RQ", 0x8130: "N-ACTION-RSP",
	0x0140: "N-CREATE-RQ", 0x8140: "N-CREATE-RSP",
	0x0150: "N-DELETE-RQ", 0x8150: "N-DELETE-RSP",
	0x0FFF: "C-CANCEL-RQ",
}

// CommandName names a DIMSE command field ("C-STORE-RQ").
func CommandName(field uint16) string {
	if n, ok := commandNames[field]; ok {
		return n
	}
	return fmt.Sprintf("0x%04X", field)
}

type commandElement struct {
	tag   uint32
	value []byte
}

// command is a parsed command set: implicit VR little endian, group 0000.
type command struct {
	elems []commandElement
}

func parseCommand(b []byte) (*command, error) {
	c := &command{}
	for len(b) > 0 {
		if len(b) < 8 {
			return nil, errorf(ReasonMalformedCommand, "element header of %d bytes", len(b))
		}
		tag := uint32(binary.LittleEndian.Uint16(b))<<16 | uint32(binary.LittleEndian.Uint16(b[2:]))
		n := binary.LittleEndian.Uint32(b[4:])
		if tag>>16 != 0 {
			return nil, errorf(ReasonMalformedCommand, "element %s outside group 0000", tagString(tag))
		}
		if uint64(n) > uint64(len(b)-8) {
			return nil, errorf(ReasonMalformedCommand, "element %s of %d bytes overruns the command set", tagString(tag), n)
		}
		c.elems = append(c.elems, commandElement{tag: tag, value: b[8 : 8+n]})
		b = b[8+n:]
	}
	if _, ok := c.u16(tagCommandField); !ok {
		return nil, errorf(ReasonMalformedCommand, "no command field")
	}
	if _, ok := c.u16(tagCommandDataSetType); !ok {
		return nil, errorf(ReasonMalformedCommand, "no command data set type")
	}
	return c, nil
}

func (c *command) get(tag uint32) ([]byte, bool) {
	for _, e := range c.elems {
		if e.tag == tag {
			return e.value, true
		}
	}
	return nil, false
}

func (c *command) u16(tag uint32) (uint16, bool) {
	v, ok := c.get(tag)
	if !ok || len(v) != 2 {
		return 0, false
	}
	return binary.LittleEndian.Uint16(v), true
}

func (c *command) field() uint16 {
	f, _ := c.u16(tagCommandField)
	return f
}

func (c *command) hasDataSet() bool {
	t, _ := c.u16(tagCommandDataSetType)
	return t != noDataSet
}

func (c *command) set(tag uint32, v []byte) {
	for i := range c.elems {
		if c.elems[i].tag == tag {
			c.elems[i].value = v
			return
		}
	}
}

// encode writes the command set with its group length recomputed.
func (c *command) encode() []byte {
	n := 0
	for _, e := range c.elems {
		if e.tag != tagCommandGroupLength {
			n += 8 + len(e.value)
		}
	}
	b := make([]byte, 0, 12+n)
	b = implicitLE.appendHeader(b, tagCommandGroupLength, "", 4)
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	for _, e := range c.elems {
		if e.tag == tagCommandGroupLength {
			continue
		}
		b = implicitLE.appendHeader(b, e.tag, "", uint32(len(e.value)))
		b = append(b, e.value...)
	}
	return b
}
