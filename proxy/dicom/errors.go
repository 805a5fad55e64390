package dicom

import (
	"fmt"

	"github.com/medgate/medgate/proxy/mask"
)

// Reason says why the codec refused a stream. It is a small enum, fit
// for an audit field or a metric label.
type Reason string

// Reasons.
const (
	ReasonMalformedPDU      Reason = "malformed-pdu"
	ReasonMalformedPDV      Reason = "malformed-pdv"
	ReasonMalformedCommand  Reason = "malformed-command"
	ReasonMalformedDataSet  Reason = "malformed-data-set"
	ReasonPDUTooLarge       Reason = "pdu-too-large"
	ReasonUnexpectedPDU     Reason = "unexpected-pdu"
	ReasonTransferSyntax    Reason = "unsupported-transfer-syntax"
	ReasonTruncated         Reason = "truncated"
	ReasonValueTooLarge     Reason = "value-too-large"
	ReasonOtherSideFailed   Reason = "other-direction-failed"
	ReasonUnmaskableElement Reason = "unmaskable-element"
)

// Error is the error of input the codec cannot parse or cannot mask
// safely. errors.Is(err, mask.ErrUnmaskable) holds for every *Error. Its
// message names tags, offsets and lengths, never element values.
type Error struct {
	Reason Reason
	Detail string
}

func (e *Error) Error() string { return "dicom: " + string(e.Reason) + ": " + e.Detail }

// Is reports mask.ErrUnmaskable as the error's kind.
func (e *Error) Is(target error) bool { return target == mask.ErrUnmaskable }

func errorf(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// abortReason maps an error to the A-ABORT reason/diag field (PS3.8
// 9.3.8): 1 unrecognized PDU, 2 unexpected PDU, 6 invalid PDU parameter
// value, 0 otherwise.
func abortReason(r Reason) byte {
	switch r {
	case ReasonUnexpectedPDU:
		return 2
	case ReasonMalformedPDU, ReasonMalformedPDV, ReasonPDUTooLarge:
		return 6
	}
	return 0
}
