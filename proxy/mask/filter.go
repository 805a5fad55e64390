package mask

import (
	"errors"
	"io"
)

// ErrUnmaskable is wrapped by every error a codec returns for input it
// cannot parse or cannot mask safely (an unknown transfer syntax, a
// malformed PDU, an MLLP frame that is not HL7, a body that is not JSON).
// The data path then aborts the connection and records an access event:
// unmasked data never crosses.
var ErrUnmaskable = errors.New("mask: input cannot be masked safely")

// Filter masks one direction of a connection: it reads the protocol from
// src until src ends and writes the masked protocol to dst. It holds no
// more than a bounded window of the stream (pixel data and large bodies
// pass through in pieces). Where the protocol has its own way to refuse
// (an HL7 negative ACK, a DICOM A-ABORT, an HTTP 502), Filter writes that
// refusal to back, toward src's sender, before it returns an error
// wrapping ErrUnmaskable. It reports each object that crossed to report,
// when report is not nil.
type Filter func(dst io.Writer, src io.Reader, back io.Writer, report func(Object)) error

// Object is what an access event records of one object or message that
// crossed a masked route. It holds pseudonyms and digests, never PHI.
type Object struct {
	// Protocol is "dicom", "hl7" or "http".
	Protocol string `json:"protocol"`
	// Operation is the DIMSE command (C-STORE-RQ, C-FIND-RSP, ...), the
	// HL7 message type (ADT^A01), or the HTTP method and path template
	// (GET /Patient/{id}).
	Operation string `json:"operation"`
	// PatientPseudonym is the keyed pseudonym of the patient ID.
	PatientPseudonym string `json:"patient,omitempty"`
	// Study, series and SOP instance UIDs, as remapped.
	StudyUID    string `json:"study_uid,omitempty"`
	SeriesUID   string `json:"series_uid,omitempty"`
	InstanceUID string `json:"instance_uid,omitempty"`
	// SHA256 is the hex digest of the object as it left, masked: a receipt
	// the receiving side can check against what it stored.
	SHA256 string `json:"sha256,omitempty"`
	// Profile and ProfileVersion name the masking applied.
	Profile        string `json:"profile"`
	ProfileVersion string `json:"profile_version"`
}
