package dicom

import (
	"sync"
)

// State is the phase of an association.
type State uint8

// States.
const (
	StateIdle        State = iota // no A-ASSOCIATE-RQ yet
	StateRequested                // A-ASSOCIATE-RQ seen
	StateEstablished              // A-ASSOCIATE-AC seen: P-DATA may flow
	StateRejected                 // A-ASSOCIATE-RJ seen
	StateReleasing                // A-RELEASE-RQ seen
	StateClosed                   // A-RELEASE-RP or A-ABORT seen
)

// Association is the state one DICOM association shares between the two
// directions of its connection: the A-ASSOCIATE-RQ one side sent, the
// A-ASSOCIATE-AC the other answered with, and so the transfer syntax of
// each presentation context and the maximum PDU length each side
// receives. Each filter of a pair records a PDU here before forwarding
// it, so a filter always finds what the other direction told its peer.
//
// The pair also serializes writes: the back writer of one filter must be
// the dst writer of the other (both lead to the same peer), and the
// Association takes care that an A-ABORT written back never lands inside
// a PDU the other filter is writing.
//
// Its methods are safe for concurrent use.
type Association struct {
	mu       sync.Mutex
	state    State
	rqFrom   int // index of the filter whose source sent the A-ASSOCIATE-RQ
	rq, ac   *Associate
	contexts map[uint8]acceptedContext
	failed   bool

	// wmu[i] serializes writes to the dst of filter i; midPDU[i] says
	// filter i has written part of a PDU there (guarded by wmu[i]).
	wmu    [2]sync.Mutex
	midPDU [2]bool
	used   [2]bool
}

type acceptedContext struct {
	abstract string
	ts       string
}

// NewAssociation returns the state of a connection's association, before
// its A-ASSOCIATE-RQ.
func NewAssociation() *Association {
	return &Association{rqFrom: -1, contexts: make(map[uint8]acceptedContext)}
}

// State returns the association's phase.
func (a *Association) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

// Request returns the A-ASSOCIATE-RQ, nil before it. Do not modify it.
func (a *Association) Request() *Associate {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rq
}

// Accept returns the A-ASSOCIATE-AC, nil before it. Do not modify it.
func (a *Association) Accept() *Associate {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ac
}

// Context returns the abstract syntax and the accepted transfer syntax of
// an accepted presentation context.
func (a *Association) Context(id uint8) (abstractSyntax, transferSyntax string, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.contexts[id]
	return c.abstract, c.ts, ok
}

// receiverMax returns the maximum P-DATA-TF length the receiver of
// filter idx's output announced (0: no limit).
func (a *Association) receiverMax(idx int) uint32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rq == nil || a.ac == nil {
		return 0
	}
	if idx == a.rqFrom {
		return a.ac.MaxLength
	}
	return a.rq.MaxLength
}

// record updates the state with a PDU filter idx read from its source,
// before the filter forwards it.
func (a *Association) record(idx int, p *PDU) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch p.Type {
	case TypeAssociateRQ:
		if a.state != StateIdle {
			return errorf(ReasonUnexpectedPDU, "A-ASSOCIATE-RQ in state %d", a.state)
		}
		rq, err := ParseAssociate(p.Type, p.Data)
		if err != nil {
			return err
		}
		if err := checkMax(rq); err != nil {
			return err
		}
		a.rq, a.rqFrom, a.state = rq, idx, StateRequested
	case TypeAssociateAC:
		if a.state != StateRequested || a.rqFrom == idx {
			return errorf(ReasonUnexpectedPDU, "A-ASSOCIATE-AC in state %d", a.state)
		}
		ac, err := ParseAssociate(p.Type, p.Data)
		if err != nil {
			return err
		}
		if err := checkMax(ac); err != nil {
			return err
		}
		proposed := make(map[uint8]string, len(a.rq.Contexts))
		for _, pc := range a.rq.Contexts {
			proposed[pc.ID] = pc.AbstractSyntax
		}
		for _, pc := range ac.Contexts {
			abstract, ok := proposed[pc.ID]
			if pc.Result != 0 || !ok {
				continue
			}
			if len(pc.TransferSyntaxes) != 1 {
				return errorf(ReasonMalformedPDU, "accepted presentation context %d names %d transfer syntaxes", pc.ID, len(pc.TransferSyntaxes))
			}
			a.contexts[pc.ID] = acceptedContext{abstract: abstract, ts: pc.TransferSyntaxes[0]}
		}
		a.ac, a.state = ac, StateEstablished
	case TypeAssociateRJ:
		if a.state != StateRequested || a.rqFrom == idx {
			return errorf(ReasonUnexpectedPDU, "A-ASSOCIATE-RJ in state %d", a.state)
		}
		a.state = StateRejected
	case TypeReleaseRQ:
		if a.state != StateEstablished && a.state != StateReleasing {
			return errorf(ReasonUnexpectedPDU, "A-RELEASE-RQ in state %d", a.state)
		}
		a.state = StateReleasing
	case TypeReleaseRP:
		if a.state != StateReleasing {
			return errorf(ReasonUnexpectedPDU, "A-RELEASE-RP in state %d", a.state)
		}
		a.state = StateClosed
	case TypeAbort:
		a.state = StateClosed
	}
	return nil
}

func checkMax(p *Associate) error {
	if p.MaxLength != 0 && p.MaxLength < minPDataPDU {
		return errorf(ReasonMalformedPDU, "%v announces a maximum length of %d", p.Type, p.MaxLength)
	}
	return nil
}

// established reports whether P-DATA may flow.
func (a *Association) established() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state == StateEstablished || a.state == StateReleasing
}

func (a *Association) setFailed() {
	a.mu.Lock()
	a.failed = true
	a.mu.Unlock()
}

func (a *Association) hasFailed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.failed
}

var errOtherSide = errorf(ReasonOtherSideFailed, "the other direction of the association failed")

// write writes b to w, the dst of filter idx. part says b is a piece of
// a PDU that more writes complete; the last piece has part false.
func (a *Association) write(idx int, w interface{ Write([]byte) (int, error) }, b []byte, part bool) error {
	a.wmu[idx].Lock()
	defer a.wmu[idx].Unlock()
	if a.hasFailed() {
		return errOtherSide
	}
	_, err := w.Write(b)
	a.midPDU[idx] = part
	return err
}

// abortTo writes an A-ABORT to w, the dst of filter idx, unless that
// filter is in the middle of a PDU there.
func (a *Association) abortTo(idx int, w interface{ Write([]byte) (int, error) }, reason byte) {
	if w == nil {
		return
	}
	a.wmu[idx].Lock()
	defer a.wmu[idx].Unlock()
	if a.midPDU[idx] {
		return
	}
	_, _ = w.Write(Abort(reason))
	a.midPDU[idx] = true // nothing may follow the abort
}
