package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/medgate/medgate/crypto/keys"
)

// The state file holds the ack watermark and a floor for the next seq:
//
//	offset  size  field
//	0       4     magic "MGSQ"
//	4       1     format version, 1
//	5       8     acked: every record with a seq up to this was delivered
//	13      8     next: no seq at or above this was handed out yet
//	21      4     CRC-32C of bytes 0-20
//
// It is replaced whole: written to a temporary file, synced, renamed over
// the old one, and the directory synced.
const (
	stateName  = "state"
	stateMagic = "MGSQ"
	stateLen   = 4 + 1 + 8 + 8 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type state struct {
	acked uint64
	next  uint64
}

func (st state) encode() []byte {
	b := make([]byte, 0, stateLen)
	b = append(b, stateMagic...)
	b = append(b, formatVersion)
	b = binary.BigEndian.AppendUint64(b, st.acked)
	b = binary.BigEndian.AppendUint64(b, st.next)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeState(b []byte) (state, error) {
	var st state
	if len(b) != stateLen {
		return st, fmt.Errorf("%d bytes, want %d", len(b), stateLen)
	}
	if crc32.Checksum(b[:stateLen-4], castagnoli) != binary.BigEndian.Uint32(b[stateLen-4:]) {
		return st, errors.New("checksum mismatch")
	}
	if string(b[:4]) != stateMagic || b[4] != formatVersion {
		return st, errors.New("unknown format")
	}
	st.acked = binary.BigEndian.Uint64(b[5:])
	st.next = binary.BigEndian.Uint64(b[13:])
	if st.next <= st.acked {
		return st, fmt.Errorf("next seq %d is not above acked seq %d", st.next, st.acked)
	}
	return st, nil
}

// readState reads dir's state file; a spool that never wrote one starts
// from zero.
func readState(dir string) (state, error) {
	path := filepath.Join(dir, stateName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return state{next: 1}, nil
	}
	if err != nil {
		return state{}, fmt.Errorf("spool: read state: %w", err)
	}
	st, err := decodeState(b)
	if err != nil {
		return state{}, fmt.Errorf("%w: state file %s: %v; it holds the ack watermark and the next seq: "+
			"restore it from a backup, or move it out of the directory to resend every record still spooled "+
			"(seqs then resume after the newest record on disk, which can repeat seqs the control plane has seen)",
			ErrCorrupt, path, err)
	}
	return st, nil
}

// writeState replaces dir's state file atomically and durably.
func writeState(dir string, st state) error {
	if err := keys.WriteFileAtomic(filepath.Join(dir, stateName), st.encode(), 0o600); err != nil {
		return fmt.Errorf("spool: write state: %w", err)
	}
	return nil
}
