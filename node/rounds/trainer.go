package rounds

import (
	"fmt"
	"slices"
	"time"
)

// trainer states, as the machine sees the local trainer.
const (
	trainerNone    = iota // no trainer, or it left or was excluded
	trainerJoining        // it called join and waits to be a member
	trainerMember         // it trains at d.Step
)

// trainerJoin: a trainer whose state is at start wants to train. One
// that resyncs holds a state that is not the list's at any step.
func (m *Machine) trainerJoin(start uint64, needState, resync bool) {
	m.startStep, m.joinAt = start, m.now
	m.submitted, m.joinPending, m.owed, m.applyAtReady = false, false, false, nil
	m.behind = !resync && m.member() && start+1 == m.d.Step && m.heldLast()
	if !resync && m.member() && (start == m.d.Step || m.behind || !needState) {
		// The trainer is where the mesh is, or one step behind with the
		// decided result of that step held here, or takes the mesh's step
		// as it is: it is a member again as soon as a majority of the list
		// is reachable.
		m.trainer, m.lastApply, m.joinPending = trainerMember, m.now, true
		return
	}
	m.trainer = trainerJoining
	m.askAt = time.Time{}
}

// heldLast reports whether this node holds the result of the last decided
// step, which its trainer has not applied, and is a member of the step
// after it.
func (m *Machine) heldLast() bool {
	l := m.d.Last
	return m.d.LastHeld && l != nil && l.Step+1 == m.d.Step && m.member() && slices.Contains(l.Value.Ring, m.self)
}

// trainerStep is the step the member trainer's state is at.
func (m *Machine) trainerStep() uint64 {
	if m.behind && m.heldLast() {
		return m.d.Step - 1
	}
	return m.d.Step
}

func (m *Machine) trainerGone(reason string) {
	m.trainer, m.submitted, m.joinPending, m.behind, m.applyAtReady = trainerNone, false, false, false, nil
	m.reason = reason
}

// aheadPeer returns a live member of the list whose heartbeat says it is
// at a later step of this epoch ("" when none).
func (m *Machine) aheadPeer() ID {
	for _, id := range m.d.List {
		if p, ok := m.peers[id]; ok && p.Live && p.Info.Epoch == m.d.Epoch && p.Info.Step > m.d.Step &&
			(p.Info.State == StateTraining || p.Info.State == StateWaiting) {
			return id
		}
	}
	return ""
}

func (m *Machine) fail(r Reason, format string, args ...any) {
	m.emit(Fail{Reason: r, Msg: fmt.Sprintf(format, args...), NextStep: m.d.Step})
}

func (m *Machine) submit(step uint64, sized, inParts bool) {
	switch {
	case m.trainer != trainerMember || !m.member() || m.joinPending:
		m.fail(ReasonNotMember, "node is %s, not a training member: call join first", m.state)
	case m.submitted:
		m.fail(ReasonBusy, "an all-reduce for step %d is already in flight", m.d.Step)
	case m.owed:
		m.fail(ReasonExcluded, "the mesh went on without this node since the trainer's step %d: join again", step)
	case m.behind && m.heldLast():
		if step != m.d.Step-1 {
			m.emit(Fail{Reason: ReasonStepMismatch, Msg: fmt.Sprintf("the trainer is at step %d, got %d", m.d.Step-1, step), NextStep: m.d.Step - 1})
			return
		}
		// Decided already, and this node holds its result.
		m.behind, m.d.LastHeld, m.dirty = false, false, true
		m.lastApply = m.now
		a := Apply{Step: step, Value: m.d.Last.Value}
		if inParts {
			// The trainer still writes the parts it has not marked ready:
			// the result goes into its buffer once they all are.
			m.applyAtReady = &a
			return
		}
		m.emit(a)
	case step != m.d.Step:
		m.fail(ReasonStepMismatch, "the mesh expects step %d, got %d", m.d.Step, step)
	case m.state == StateWaiting:
		m.fail(ReasonWaiting, "not in the majority, waiting to rejoin: %s", m.reason)
	default:
		if sized {
			m.measure()
		}
		m.submitted, m.submitAt = true, m.now
		m.offerAt = time.Time{}
	}
}

// measure folds the trainer's last step into its smoothed speed: its
// share over the time from the last answer to this submit.
func (m *Machine) measure() {
	if m.lastApply.IsZero() {
		return
	}
	dt := m.now.Sub(m.lastApply).Seconds()
	_, shares := m.Shares()
	lo, hi, ok := ShareRange(m.d.List, shares, m.self)
	if !ok || dt <= 0 {
		return
	}
	v := float64(hi-lo) / max(dt, 1e-4)
	if m.speed == 0 {
		m.speed = v
	} else {
		m.speed += speedSmoothing * (v - m.speed)
	}
}

// speedSmoothing is the weight of the newest step in the smoothed speed.
const speedSmoothing = 0.3

// openShares is the open step's shares (aligned with d.List).
func (m *Machine) openShares() []uint32 {
	_, s := m.Shares()
	return slices.Clone(s)
}

// Shares returns the agreed list of the open step and its shares of the
// global batch (aligned with it): those decided with the last step, or
// equal shares when the list did not come from a decision (a formed
// list).
func (m *Machine) Shares() ([]ID, []uint32) {
	if l := m.d.Last; l != nil && l.Step+1 == m.d.Step && len(l.Value.Shares) == len(m.d.List) && slices.Equal(l.Value.Next, m.d.List) {
		return m.d.List, l.Value.Shares
	}
	return m.d.List, EqualShares(len(m.d.List))
}
