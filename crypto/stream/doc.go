// Package stream implements medgate's record format: a stream of
// AES-256-GCM segments under a per-stream key, used for each direction of
// the tunnel, for files sealed with `medgate seal`, and for the event spool.
//
// A Writer seals what is written to it and a Reader opens it again. The
// Reader releases plaintext only segment by segment, after each segment has
// authenticated, and reports truncation, reordering, duplication, segments
// spliced from another stream, a changed header, a wrong key and bytes after
// the end, each as its own sentinel error. Reader and Writer errors stick:
// once one has failed, every later call returns the same error.
//
// # Keys
//
// The caller supplies a 32-byte data key (the envelope DEK). Every stream
// draws a random 32-byte salt, and HKDF-SHA256 (RFC 5869) over the data key
// and the salt yields three values:
//
//	prk        = HKDF-Extract(SHA-256, salt, data key)
//	segment key = HKDF-Expand(prk, "medgate stream v1 segment key", 32)
//	commitment  = HKDF-Expand(prk, "medgate stream v1 key commitment", 32)
//	header key  = HKDF-Expand(prk, "medgate stream v1 header mac", 32)
//
// The commitment is stored in the header and compared in constant time
// before anything else is checked, so a Reader given the wrong data key
// fails with [ErrWrongKey] before it decrypts a segment, and no stream opens
// under two different keys. The header key authenticates the header with
// HMAC-SHA256, so a changed header field fails with [ErrHeader]. A changed
// salt or commitment cannot be told apart from a wrong key and reads as
// [ErrWrongKey].
//
// # Wire format
//
// All integers are big-endian. The header:
//
//	offset  size  field
//	0       4     magic "MGST"
//	4       1     format version, 1
//	5       4     segment size S: most plaintext bytes in one segment, 16 KiB to 1 MiB
//	9       32    salt
//	41      1+n   key ID: length, then printable ASCII (0x21-0x7e), at most 255 bytes
//	        2+n   wrapped data key: length, then bytes, at most 1024 (may be empty)
//	        1+n   route: length, then UTF-8 without control characters, at most 255 bytes
//	        1+n   origin jurisdiction: same rules
//	        1+n   policy version: same rules
//	        32    key commitment
//	        32    HMAC-SHA256 under the header key of every header byte before it
//
// Then one or more segments:
//
//	offset  size  field
//	0       4     bit 31: last-segment flag; bits 0-30: plaintext length L
//	4       12    nonce, random per segment
//	16      L     AES-256-GCM ciphertext under the segment key
//	16+L    16    GCM tag
//
// Each segment's associated data is 44 bytes: SHA-256 of the whole header
// (including its commitment and MAC), the segment index as a uint64
// counting from 0, and the segment's 4-byte length word (so the last flag
// and the length are authenticated). A non-final segment holds 1 to S
// bytes; the final segment holds 0 to S bytes and is always present, so even
// an empty stream has one. Nothing may follow the final segment.
//
// Segments may be shorter than S: [Writer.Flush] seals what is buffered
// without ending the stream, which the tunnel needs for request and
// response protocols. A Reader therefore releases each segment as soon as it
// has arrived and authenticated.
//
// # Nonces and FIPS 140-3
//
// Segments are sealed with [crypto/cipher.NewGCMWithRandomNonce], the GCM
// construction that Go's FIPS 140-3 mode accepts (GODEBUG=fips140=only
// refuses caller-chosen GCM nonces). A random 96-bit nonce is safe for
// 2^32 messages under one key; the segment key is new for every stream, and
// a stream holds at most [MaxSegments] segments (64 TiB at 16 KiB).
//
// All randomness (salt and nonces) comes from crypto/rand and the module's
// DRBG. Tests make it deterministic with testing/cryptotest.SetGlobalRandom,
// so there is no separate code path for known-answer vectors.
package stream
