// Package dicomtest writes large DICOM objects for tests and benchmarks.
package dicomtest

import (
	"bufio"
	"encoding/binary"
	"os"
	"strconv"
)

// WriteLarge writes a CT-like, multi-frame Part 10 object with pixelBytes of
// native pixel data, in explicit VR little endian, without holding it in
// memory. Its patient is BENCH^PATIENT, ID BENCH-4711, born 19700101; its
// frames are 4096 x 4096 16-bit; every pixel data byte at offset i of the
// pixel data is PixelByte(i).
func WriteLarge(path string, pixelBytes int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	elem := func(b []byte, group, elem uint16, vr, value string) []byte {
		if len(value)%2 == 1 {
			pad := " "
			if vr == "UI" {
				pad = "\x00"
			}
			value += pad
		}
		b = binary.LittleEndian.AppendUint16(b, group)
		b = binary.LittleEndian.AppendUint16(b, elem)
		b = append(b, vr...)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(value)))
		return append(b, value...)
	}
	us := func(b []byte, group, el uint16, v uint16) []byte {
		b = binary.LittleEndian.AppendUint16(b, group)
		b = binary.LittleEndian.AppendUint16(b, el)
		b = append(b, "US"...)
		b = binary.LittleEndian.AppendUint16(b, 2)
		return binary.LittleEndian.AppendUint16(b, v)
	}
	const sopClass, sopInst = "1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.2.1125.9.1"
	var meta []byte
	meta = append(meta, 0x02, 0, 0x01, 0, 'O', 'B', 0, 0, 2, 0, 0, 0, 0, 1)
	meta = elem(meta, 0x0002, 0x0002, "UI", sopClass)
	meta = elem(meta, 0x0002, 0x0003, "UI", sopInst)
	meta = elem(meta, 0x0002, 0x0010, "UI", "1.2.840.10008.1.2.1")
	meta = elem(meta, 0x0002, 0x0012, "UI", "1.2.826.0.1.3680043.2.1125.1")
	var head []byte
	head = append(head, make([]byte, 128)...)
	head = append(head, "DICM"...)
	gl := []byte{0x02, 0, 0, 0, 'U', 'L', 4, 0}
	gl = binary.LittleEndian.AppendUint32(gl, uint32(len(meta)))
	head = append(head, gl...)
	head = append(head, meta...)
	var ds []byte
	ds = elem(ds, 0x0008, 0x0016, "UI", sopClass)
	ds = elem(ds, 0x0008, 0x0018, "UI", sopInst)
	ds = elem(ds, 0x0008, 0x0020, "DA", "20261122")
	ds = elem(ds, 0x0008, 0x0060, "CS", "CT")
	ds = elem(ds, 0x0008, 0x0090, "PN", "REFERRER^ROBIN")
	ds = elem(ds, 0x0010, 0x0010, "PN", "BENCH^PATIENT")
	ds = elem(ds, 0x0010, 0x0020, "LO", "BENCH-4711")
	ds = elem(ds, 0x0010, 0x0030, "DA", "19700101")
	ds = elem(ds, 0x0020, 0x000D, "UI", "1.2.826.0.1.3680043.2.1125.9.2")
	ds = elem(ds, 0x0020, 0x000E, "UI", "1.2.826.0.1.3680043.2.1125.9.3")
	ds = us(ds, 0x0028, 0x0002, 1)
	ds = elem(ds, 0x0028, 0x0004, "CS", "MONOCHROME2")
	side := uint16(4096)
	frames := pixelBytes / (int64(side) * int64(side) * 2)
	ds = elem(ds, 0x0028, 0x0008, "IS", strconv.FormatInt(max(frames, 1), 10))
	ds = us(ds, 0x0028, 0x0010, side)
	ds = us(ds, 0x0028, 0x0011, side)
	ds = us(ds, 0x0028, 0x0100, 16)
	ds = us(ds, 0x0028, 0x0101, 16)
	ds = us(ds, 0x0028, 0x0102, 15)
	ds = us(ds, 0x0028, 0x0103, 0)
	n := max(frames, 1) * int64(side) * int64(side) * 2
	px := []byte{0xE0, 0x7F, 0x10, 0x00, 'O', 'W', 0, 0}
	px = binary.LittleEndian.AppendUint32(px, uint32(n))
	if _, err := w.Write(append(append(head, ds...), px...)); err != nil {
		return err
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = PixelByte(int64(i))
	}
	for left := n; left > 0; {
		k := min(left, int64(len(chunk)))
		if _, err := w.Write(chunk[:k]); err != nil {
			return err
		}
		left -= k
	}
	return w.Flush()
}

// PixelByte is the pixel data byte at offset i of what WriteLarge writes.
func PixelByte(i int64) byte { return byte((i % (1 << 20)) * 31) }
