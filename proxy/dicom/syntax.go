package dicom

import "strings"

// Transfer syntax UIDs the codec names.
const (
	ImplicitVRLittleEndian = "1.2.840.10008.1.2"
	ExplicitVRLittleEndian = "1.2.840.10008.1.2.1"
	ExplicitVRBigEndian    = "1.2.840.10008.1.2.2"
	DeflatedExplicitVRLE   = "1.2.840.10008.1.2.1.99"
	RLELossless            = "1.2.840.10008.1.2.5"
	jpipReferencedDeflate  = "1.2.840.10008.1.2.4.95"
)

// syntax is how a data set is encoded.
type syntax struct {
	explicit bool
	big      bool
}

var (
	implicitLE = syntax{}
	explicitLE = syntax{explicit: true}
	explicitBE = syntax{explicit: true, big: true}
)

// syntaxOf returns the encoding of data sets in transfer syntax ts, and
// false for a syntax the codec cannot parse without inflating it
// (deflated) or does not know. Every encapsulated syntax (JPEG, JPEG-LS,
// JPEG 2000, HTJ2K, MPEG, HEVC, RLE) is explicit VR little endian outside
// its pixel data, which passes through untouched.
func syntaxOf(ts string) (syntax, bool) {
	switch ts {
	case ImplicitVRLittleEndian:
		return implicitLE, true
	case ExplicitVRLittleEndian, RLELossless,
		"1.2.840.10008.1.2.1.98", // encapsulated uncompressed explicit VR little endian
		"1.2.840.10008.1.2.8.1":  // deflated image frame compression: frames only
		return explicitLE, true
	case ExplicitVRBigEndian:
		return explicitBE, true
	case jpipReferencedDeflate:
		return syntax{}, false
	}
	if strings.HasPrefix(ts, "1.2.840.10008.1.2.4.") {
		return explicitLE, true
	}
	return syntax{}, false
}
