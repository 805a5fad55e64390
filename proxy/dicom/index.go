package dicom

import (
	"sync"

	"github.com/medgate/medgate/proxy/mask"
)

// Index remembers what the masked identifiers that left stand for: the
// original patient ID of each patient pseudonym and the original UID of
// each remapped UID. The side that masks answers (an archive's sidecar)
// fills it; a Restorer on the same side uses it to translate the
// identifiers of incoming requests back, so that a peer that only ever saw
// pseudonyms can query by patient pseudonym and retrieve by remapped UID,
// and so that responses to the local application name its own UIDs.
//
// An Index holds identifiers of the local jurisdiction in memory only
// and never lets them leave: it is never serialized or logged. It keeps
// the most recent entries up to its capacity. Safe for concurrent use;
// share one per sidecar and pseudonym key.
type Index struct {
	mu    sync.Mutex
	max   int
	m     map[string]string
	order []string // ring of keys, oldest at next
	next  int
}

// NewIndex returns an index of at most max entries (100000 if max <= 0).
func NewIndex(max int) *Index {
	if max <= 0 {
		max = 100000
	}
	return &Index{max: max, m: make(map[string]string)}
}

func (ix *Index) put(masked, original string) {
	if masked == "" || masked == original {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if _, ok := ix.m[masked]; ok {
		ix.m[masked] = original
		return
	}
	if len(ix.order) < ix.max {
		ix.order = append(ix.order, masked)
	} else {
		delete(ix.m, ix.order[ix.next])
		ix.order[ix.next] = masked
		ix.next = (ix.next + 1) % ix.max
	}
	ix.m[masked] = original
}

func (ix *Index) get(masked string) (string, bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	o, ok := ix.m[masked]
	return o, ok
}

// Len returns the number of entries.
func (ix *Index) Len() int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return len(ix.m)
}

// WithIndex returns a copy of m that records each patient pseudonym and
// remapped UID it writes in ix.
func (m *Masker) WithIndex(ix *Index) *Masker {
	c := *m
	c.index = ix
	return &c
}

// NewRestorer returns a Masker for the direction that carries requests
// into the masked side: it translates the patient IDs and UIDs of query
// and retrieve identifiers (C-FIND, C-GET, C-MOVE requests) and the SOP
// instance UIDs of command sets back to their originals where ix knows
// them, leaves unknown values as they are, and passes every other data
// set through unparsed.
func NewRestorer(ix *Index) *Masker {
	return &Masker{
		profile: "restore",
		exact:   map[uint32]rule{tagPatientID: {act: actRestore}},
		byVR:    map[string]rule{"UI": {act: actRestore}},
		index:   ix,
		restore: true,
	}
}

// CodecWithIndex is Codec for the side whose answers are masked and whose
// incoming requests name masked identifiers: toPeer masks with p and
// records in ix, fromPeer restores with ix.
func CodecWithIndex(ix *Index) func(p *mask.Profile, env mask.Env) (toPeer, fromPeer mask.Filter, err error) {
	return func(p *mask.Profile, env mask.Env) (mask.Filter, mask.Filter, error) {
		m, err := NewMasker(p, env)
		if err != nil {
			return nil, nil, err
		}
		to, from := NewAssociation().Filters(m.WithIndex(ix), NewRestorer(ix))
		return to, from, nil
	}
}
