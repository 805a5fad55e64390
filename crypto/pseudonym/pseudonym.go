// Package pseudonym turns identifiers into keyed pseudonyms that are the
// same wherever the same key is used: the same patient ID becomes the same
// token in DICOM, HL7 and FHIR, dates of one patient shift by the same
// number of days, and a UID maps to the same new UID in every object, so
// references between studies, series and instances stay intact.
//
// Everything is HMAC-SHA256 under one 32-byte project key (derived from
// the keyring, for example keys.File.Derive("pseudonym/v1")). Without the
// key a pseudonym cannot be linked back to its input, nor can two
// pseudonyms be linked to each other across different keys. A Keyer is
// safe for concurrent use and never logs.
package pseudonym

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"strings"
	"sync"
	"time"
)

// KeySize is the size of the project key.
const KeySize = 32

// Kinds of identifiers. A pseudonym is keyed by kind as well as value, so
// the same digits as a patient ID and as an accession number give
// different tokens.
const (
	KindPatientID = "patient-id"
	KindName      = "name"
	KindAccession = "accession"
	KindOther     = "other"
)

// Keyer makes pseudonyms under one key.
type Keyer struct {
	pool sync.Pool // of hash.Hash (HMAC under the key)
}

// New returns a Keyer for key, which must be KeySize bytes.
func New(key []byte) (*Keyer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("pseudonym: key is %d bytes, want %d", len(key), KeySize)
	}
	k := append([]byte(nil), key...)
	return &Keyer{pool: sync.Pool{New: func() any { return hmac.New(sha256.New, k) }}}, nil
}

func (k *Keyer) sum(domain, kind, value string) [sha256.Size]byte {
	h := k.pool.Get().(hash.Hash)
	defer k.pool.Put(h)
	h.Reset()
	h.Write([]byte(domain))
	h.Write([]byte{0})
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(value))
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Token returns a 16-character pseudonym (upper-case letters and digits
// 2-7) for value of the given kind. Values are compared exactly; callers
// normalize (trim padding) first.
func (k *Keyer) Token(kind, value string) string {
	s := k.sum("token", kind, value)
	return b32.EncodeToString(s[:10])
}

// TokenLen returns a pseudonym of exactly n characters (1 to 52), for
// fields whose length must not change.
func (k *Keyer) TokenLen(kind, value string, n int) string {
	n = min(max(n, 1), 52)
	s := k.sum("token", kind, value)
	t := b32.EncodeToString(s[:])
	return t[:n]
}

// maxShiftDays bounds date shifts: dates move by 1 to 365 days, earlier or
// later, never by zero.
const maxShiftDays = 365

// ShiftDays returns the number of days all dates of the patient identified
// by patientKey move by: the same for every date of that patient, never 0.
func (k *Keyer) ShiftDays(patientKey string) int {
	s := k.sum("date-shift", KindPatientID, patientKey)
	v := int(binary.BigEndian.Uint32(s[:4]) % (2 * maxShiftDays)) // 0..729
	if v < maxShiftDays {
		return v - maxShiftDays // -365..-1
	}
	return v - maxShiftDays + 1 // 1..365
}

// ErrDate is returned for a value that is not a date in the expected form.
var ErrDate = errors.New("pseudonym: not a date")

// ShiftDate shifts a DICOM DA or HL7 date (YYYYMMDD; a longer HL7 DTM keeps
// its time of day after the date) by the patient's shift.
func (k *Keyer) ShiftDate(patientKey, value string) (string, error) {
	if len(value) < 8 {
		return "", ErrDate
	}
	t, err := time.Parse("20060102", value[:8])
	if err != nil {
		return "", ErrDate
	}
	shifted := t.AddDate(0, 0, k.ShiftDays(patientKey))
	if y := shifted.Year(); y < 1 || y > 9999 {
		return "", ErrDate
	}
	return shifted.Format("20060102") + value[8:], nil
}

// UID maps a DICOM UID to a new one under the 2.25 arc (ISO/IEC 9834-8: a
// UUID as a decimal integer): valid UID syntax, at most 64 characters, the
// same for the same input, and different inputs map to different UIDs
// except with negligible probability.
func (k *Keyer) UID(uid string) string {
	s := k.sum("uid", "", strings.TrimRight(uid, "\x00 "))
	var u [16]byte
	copy(u[:], s[:16])
	u[6] = u[6]&0x0f | 0x80 // UUID version 8 (custom), RFC 9562
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return "2.25." + new(big.Int).SetBytes(u[:]).String()
}
