// Package dicom is the streaming DICOM upper layer (DIMSE) codec of the
// data path: it follows an association through its PDUs, reassembles
// DIMSE messages from PDVs spread over P-DATA-TF PDUs, and applies a
// masking profile to every data set it carries, element by element,
// without holding a whole object: pixel data and other large values pass
// through in pieces, so a 1 GiB object costs a few MiB of memory.
//
// # Layers
//
//   - PDUs (PS3.8 9.3): ReadPDU reads one whole PDU, bounded; association
//     PDUs (A-ASSOCIATE-RQ/AC/RJ, A-RELEASE-RQ/RP, A-ABORT) pass through
//     byte-identical. ParseAssociate reads the items a codec needs:
//     presentation contexts and the maximum length each side receives.
//   - PDVs (PS3.8 E.2): P-DATA-TF PDUs are read as a stream of PDV
//     fragments and written anew, re-fragmented within the maximum length
//     the receiving side announced.
//   - Data sets (PS3.5 7): implicit VR little endian, explicit VR little
//     and big endian, defined and undefined lengths, sequences, items and
//     encapsulated pixel data, parsed across fragment and PDU boundaries.
//
// # Association state
//
// One TCP connection carries one association, and each direction of it
// needs what the other direction said: the data sets one side sends use
// the transfer syntax the other side accepted in its A-ASSOCIATE-AC, and
// each side may send only PDUs as long as the other side announced. An
// Association holds that shared state. NewFilters returns the two
// Filters of one connection over one fresh Association; each filter
// records what it sees (A-ASSOCIATE-RQ, AC, RJ, release, abort) before it
// forwards it, so the other direction always finds the state it depends
// on (a peer cannot answer a PDU it has not yet received).
//
// # Masking
//
// A Masker (NewMasker) compiles a mask.Profile once; it is immutable and
// safe for concurrent use by any number of connections. The filter of the
// masked direction applies it to the data set of every DIMSE message it
// carries (C-STORE objects, C-FIND, C-GET and C-MOVE identifiers, N-*
// data sets), remaps SOP instance UIDs in command sets, adds Patient
// Identity Removed and the De-identification Method attributes to stored
// objects, and reports a mask.Object for each data set that crossed.
//
// # Failing closed
//
// Whatever the codec cannot parse or cannot mask safely (a malformed PDU,
// PDV or element, a deflated or unknown transfer syntax, a value too long
// to hold) ends the association: the filter writes an A-ABORT toward both
// peers and returns an *Error, which wraps mask.ErrUnmaskable and names a
// Reason. Nothing is forwarded before it is masked. Errors never carry
// element values, and the package never logs.
package dicom
