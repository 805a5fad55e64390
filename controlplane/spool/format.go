package spool

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"
)

// Sizes and limits of the format (see the package documentation).
const (
	// MaxRecordSize is the largest record Append takes.
	MaxRecordSize = 1 << 20

	segMagic       = "MGSP"
	formatVersion  = 1
	headerFixedLen = len(segMagic) + 1 + 8 // magic, version, base seq
	maxKeyIDLen    = 255
	maxWrappedLen  = 1024
	nonceLen       = 12
	tagLen         = 16
	sealOverhead   = nonceLen + tagLen
	maxHeaderLen   = headerFixedLen + 1 + maxKeyIDLen + 2 + maxWrappedLen + sealOverhead

	frameHeaderLen = 4 + 8 + 4 // length word, seq, CRC-32C of both
	timeLen        = 8         // append time, first in the sealed plaintext
	minSealed      = sealOverhead + timeLen
	maxSealed      = minSealed + MaxRecordSize
	adLen          = sha256.Size + frameHeaderLen

	headerADLabel = "medgate spool v1 segment header\x00"
)

// frameLen is the size on disk of a record holding n data bytes.
func frameLen(n int) int64 { return int64(frameHeaderLen + minSealed + n) }

// segHeader is a parsed segment header.
type segHeader struct {
	base    uint64 // seq of the segment's first record
	keyID   string
	wrapped []byte
	len     int // bytes, including the seal
}

// segKey seals and opens one segment's records.
type segKey struct {
	aead   cipher.AEAD
	prefix [sha256.Size]byte // SHA-256 of the whole header, first in every record's AD
}

func newAEAD(dek []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(dek)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return aead, nil
}

// checkKeyID accepts what a segment header can hold: printable ASCII
// without spaces, 1 to 255 bytes. It keeps error messages that quote the
// ID on one line.
func checkKeyID(id string) error {
	if id == "" || len(id) > maxKeyIDLen {
		return fmt.Errorf("key ID is %d bytes, want 1 to %d", len(id), maxKeyIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("key ID byte %d is 0x%02x, want printable ASCII", i, c)
		}
	}
	return nil
}

// sealHeader returns a segment header for base under dek, wrapped as
// keyID and wrapped, and the key for its records.
func sealHeader(dek []byte, base uint64, keyID string, wrapped []byte) ([]byte, *segKey, error) {
	if err := checkKeyID(keyID); err != nil {
		return nil, nil, fmt.Errorf("spool: keyring returned a %v", err)
	}
	if len(wrapped) == 0 || len(wrapped) > maxWrappedLen {
		return nil, nil, fmt.Errorf("spool: keyring returned a wrapped key of %d bytes, want 1 to %d", len(wrapped), maxWrappedLen)
	}
	aead, err := newAEAD(dek)
	if err != nil {
		return nil, nil, err
	}
	b := make([]byte, 0, headerFixedLen+1+len(keyID)+2+len(wrapped)+sealOverhead)
	b = append(b, segMagic...)
	b = append(b, formatVersion)
	b = binary.BigEndian.AppendUint64(b, base)
	b = append(b, byte(len(keyID)))
	b = append(b, keyID...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(wrapped)))
	b = append(b, wrapped...)
	b = aead.Seal(b, nil, nil, append([]byte(headerADLabel), b...))
	return b, &segKey{aead: aead, prefix: sha256.Sum256(b)}, nil
}

// parseHeader parses the header at the start of b. It does not
// authenticate it: that needs the data key, which the header names.
func parseHeader(b []byte) (segHeader, error) {
	var h segHeader
	if len(b) < headerFixedLen+1 {
		return h, errors.New("file too short for a segment header")
	}
	if string(b[:4]) != segMagic {
		return h, errors.New("not a spool segment (bad magic)")
	}
	if b[4] != formatVersion {
		return h, fmt.Errorf("format version %d, want %d", b[4], formatVersion)
	}
	h.base = binary.BigEndian.Uint64(b[5:13])
	if h.base == 0 {
		return h, errors.New("first seq is 0")
	}
	p := headerFixedLen
	n := int(b[p])
	p++
	if len(b) < p+n+2 {
		return h, errors.New("header ends inside the key ID")
	}
	h.keyID = string(b[p : p+n])
	if err := checkKeyID(h.keyID); err != nil {
		return h, err
	}
	p += n
	n = int(binary.BigEndian.Uint16(b[p:]))
	p += 2
	if n == 0 || n > maxWrappedLen {
		return h, fmt.Errorf("wrapped key is %d bytes, want 1 to %d", n, maxWrappedLen)
	}
	if len(b) < p+n+sealOverhead {
		return h, errors.New("header ends inside the wrapped key or its seal")
	}
	h.wrapped = b[p : p+n]
	h.len = p + n + sealOverhead
	return h, nil
}

// openHeader authenticates header (exactly h.len bytes) under dek and
// returns the key for its records.
func openHeader(dek, header []byte) (*segKey, error) {
	aead, err := newAEAD(dek)
	if err != nil {
		return nil, err
	}
	body := header[:len(header)-sealOverhead]
	if _, err := aead.Open(nil, nil, header[len(body):], append([]byte(headerADLabel), body...)); err != nil {
		return nil, errors.New("segment header failed authentication")
	}
	return &segKey{aead: aead, prefix: sha256.Sum256(header)}, nil
}

// appendFrame appends the record frame for seq to dst. scratch is reused
// for the plaintext and returned grown.
func (k *segKey) appendFrame(dst, scratch []byte, seq uint64, t time.Time, data []byte) (out, scratchOut []byte) {
	start := len(dst)
	dst = binary.BigEndian.AppendUint32(dst, uint32(minSealed+len(data)))
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
	var ad [adLen]byte
	copy(ad[:], k.prefix[:])
	copy(ad[sha256.Size:], dst[start:])
	scratch = binary.BigEndian.AppendUint64(scratch[:0], uint64(t.UnixNano()))
	scratch = append(scratch, data...)
	dst = k.aead.Seal(dst, nil, scratch, ad[:])
	clear(scratch)
	return dst, scratch
}

// failKind says why a frame did not decode.
type failKind int

const (
	failIncomplete failKind = iota + 1 // the file ends inside the frame
	failHeader                         // the frame header's checksum does not match
	failLength                         // the length word is impossible
	failAuth                           // the frame did not authenticate
	failOrder                          // it authenticated but holds another seq than expected
)

// frameError describes a frame that did not decode. It is internal: Open
// turns it into a truncation or a *CorruptError.
type frameError struct {
	kind failKind
	off  int64  // where the frame starts
	end  int64  // where it ends by its length word; 0 when unknown
	want uint64 // the seq the frame should hold
	got  uint64 // the seq it holds (failOrder)
}

func (e *frameError) Error() string { return e.reason() }

func (e *frameError) reason() string {
	switch e.kind {
	case failIncomplete:
		return "file ends inside a record"
	case failHeader:
		return "record header checksum mismatch"
	case failLength:
		return "record length word is impossible"
	case failAuth:
		return "record failed authentication"
	default:
		return fmt.Sprintf("record holds seq %d where seq %d belongs", e.got, e.want)
	}
}

// frameReader reads the frames of one segment between two offsets.
type frameReader struct {
	br   *bufio.Reader
	key  *segKey
	off  int64  // where the next frame starts
	end  int64  // where reading stops
	want uint64 // the seq the next frame must hold
	hdr  [frameHeaderLen]byte
	body []byte
	pt   []byte
}

func newFrameReader(ra io.ReaderAt, off, end int64, key *segKey, want uint64) *frameReader {
	return &frameReader{
		br:  bufio.NewReaderSize(io.NewSectionReader(ra, off, end-off), 64<<10),
		key: key, off: off, end: end, want: want,
	}
}

// readHeader reads the next frame's header and returns the frame's sealed
// length. It returns io.EOF at the end and a *frameError for a bad frame.
func (fr *frameReader) readHeader() (int64, error) {
	if fr.off == fr.end {
		return 0, io.EOF
	}
	if fr.end-fr.off < frameHeaderLen {
		return 0, &frameError{kind: failIncomplete, off: fr.off, want: fr.want}
	}
	if _, err := io.ReadFull(fr.br, fr.hdr[:]); err != nil {
		return 0, fmt.Errorf("read record at offset %d: %w", fr.off, noEOF(err))
	}
	if crc32.Checksum(fr.hdr[:12], castagnoli) != binary.BigEndian.Uint32(fr.hdr[12:]) {
		return 0, &frameError{kind: failHeader, off: fr.off, want: fr.want}
	}
	n := int64(binary.BigEndian.Uint32(fr.hdr[:4]))
	if n < minSealed || n > maxSealed {
		return 0, &frameError{kind: failLength, off: fr.off, want: fr.want}
	}
	if end := fr.off + frameHeaderLen + n; end > fr.end {
		return 0, &frameError{kind: failIncomplete, off: fr.off, end: end, want: fr.want}
	}
	return n, nil
}

// next authenticates the next frame and returns its seq, append time
// (Unix nanoseconds) and data. With fresh the data is newly allocated;
// otherwise it is valid until the next call. It returns io.EOF at the end
// and a *frameError for a bad frame; the reader is then spent.
func (fr *frameReader) next(fresh bool) (uint64, int64, []byte, error) {
	n, err := fr.readHeader()
	if err != nil {
		return 0, 0, nil, err
	}
	if int64(cap(fr.body)) < n {
		fr.body = make([]byte, n)
	}
	body := fr.body[:n]
	if _, err := io.ReadFull(fr.br, body); err != nil {
		return 0, 0, nil, fmt.Errorf("read record at offset %d: %w", fr.off, noEOF(err))
	}
	end := fr.off + frameHeaderLen + n
	var ad [adLen]byte
	copy(ad[:], fr.key.prefix[:])
	copy(ad[sha256.Size:], fr.hdr[:])
	dst := fr.pt[:0]
	if fresh {
		dst = nil
	}
	pt, err := fr.key.aead.Open(dst, nil, body, ad[:])
	if err != nil {
		return 0, 0, nil, &frameError{kind: failAuth, off: fr.off, end: end, want: fr.want}
	}
	if !fresh {
		fr.pt = pt
	}
	seq := binary.BigEndian.Uint64(fr.hdr[4:])
	if seq != fr.want {
		return 0, 0, nil, &frameError{kind: failOrder, off: fr.off, end: end, want: fr.want, got: seq}
	}
	fr.off = end
	fr.want++
	return seq, int64(binary.BigEndian.Uint64(pt)), pt[timeLen:], nil
}

// skip passes over the next frame without authenticating it. A frame
// returned by next after skips is still checked: its seq is bound into its
// associated data and must be the one the count of frames says.
func (fr *frameReader) skip() error {
	n, err := fr.readHeader()
	if err != nil {
		return err
	}
	if _, err := fr.br.Discard(int(n)); err != nil {
		return fmt.Errorf("read record at offset %d: %w", fr.off, noEOF(err))
	}
	fr.off += frameHeaderLen + n
	fr.want++
	return nil
}

// noEOF reports a file that ended early as io.ErrUnexpectedEOF: the reader
// was told how long it is.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// mark remembers where one record starts, every markEvery records, so
// Pending can seek and Stats can tell the oldest record's age without
// holding the spool in memory.
type mark struct {
	seq  uint64
	off  int64
	time int64 // Unix nanoseconds
}

const markEvery = 32

// unwrapFunc returns the data key wrapped under keyID.
type unwrapFunc func(keyID string, wrapped []byte) ([]byte, error)

// segScan is what reading a whole segment found.
type segScan struct {
	hdr   segHeader
	key   *segKey
	last  uint64 // seq of the last good record; hdr.base-1 when none
	end   int64  // where the last good record ends
	marks []mark
	fail  *frameError // the first bad frame, or nil
}

// scanSegment authenticates the header and every record of the segment in
// ra (size bytes). Header problems are returned as *CorruptError or
// *KeyError naming path; a bad frame stops the scan and is reported in
// fail, for the caller to truncate or refuse.
func scanSegment(ra io.ReaderAt, size int64, path string, unwrap unwrapFunc) (*segScan, error) {
	hb := make([]byte, min(size, int64(maxHeaderLen)))
	if _, err := ra.ReadAt(hb, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("spool: read %s: %w", path, err)
	}
	h, err := parseHeader(hb)
	if err != nil {
		return nil, &CorruptError{Path: path, Offset: -1, Reason: "segment header: " + err.Error()}
	}
	dek, err := unwrap(h.keyID, h.wrapped)
	if err != nil {
		return nil, &KeyError{Path: path, KeyID: h.keyID, Err: err}
	}
	key, err := openHeader(dek, hb[:h.len])
	clear(dek)
	if err != nil {
		return nil, &CorruptError{Path: path, Offset: -1, Reason: err.Error()}
	}
	sc := &segScan{hdr: h, key: key, last: h.base - 1, end: int64(h.len)}
	fr := newFrameReader(ra, int64(h.len), size, key, h.base)
	for {
		off := fr.off
		seq, t, _, err := fr.next(false)
		if err == io.EOF {
			break
		}
		var fe *frameError
		if errors.As(err, &fe) {
			sc.fail = fe
			break
		}
		if err != nil {
			return nil, fmt.Errorf("spool: %s: %w", path, err)
		}
		if (seq-h.base)%markEvery == 0 {
			sc.marks = append(sc.marks, mark{seq: seq, off: off, time: t})
		}
		sc.last, sc.end = seq, fr.off
	}
	return sc, nil
}

// allZero reports whether ra holds only zero bytes from off to end: what
// a file system can leave where a write was under way when power failed.
func allZero(ra io.ReaderAt, off, end int64) (bool, error) {
	buf := make([]byte, 32<<10)
	for off < end {
		n := min(int64(len(buf)), end-off)
		if _, err := ra.ReadAt(buf[:n], off); err != nil {
			return false, noEOF(err)
		}
		for _, c := range buf[:n] {
			if c != 0 {
				return false, nil
			}
		}
		off += n
	}
	return true, nil
}
