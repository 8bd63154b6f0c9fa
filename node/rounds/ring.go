package rounds

import (
	"slices"
	"time"
)

// attempt is this node's part in one all-reduce of the open step.
type attempt struct {
	ballot  Ballot
	value   Value
	running bool
	ok      bool // the all-reduce succeeded: the scratch buffer holds its result
	sentAt  time.Time
}

// onStart runs this node's part of an attempt's all-reduce.
func (m *Machine) onStart(msg Message) {
	v := msg.Value
	if v == nil || msg.Ballot.By != msg.From || v.Attempt != msg.Ballot || !slices.Contains(v.Ring, m.self) || !m.ringInList(*v) {
		m.drop("start does not fit")
		return
	}
	if msg.Ballot.Less(m.d.Promised) || msg.Ballot.Less(m.att.ballot) {
		m.drop("stale start")
		return
	}
	if m.att.ballot == msg.Ballot {
		if !m.att.running {
			m.sendResult()
		}
		return
	}
	if m.att.ok {
		// This node holds the result of another attempt, which may yet be
		// chosen: its bytes are kept. The proposer learns of them and may
		// propose that attempt instead.
		r := m.at(MsgFailed)
		r.Ballot, r.Held = msg.Ballot, m.heldValue()
		m.send(msg.From, r)
		return
	}
	m.att = attempt{ballot: msg.Ballot, value: *v}
	if !m.submitted {
		m.sendResult()
		return
	}
	m.att.running = true
	if m.d.LastHeld {
		// The scratch buffer is reused: the last step's result is gone.
		m.d.LastHeld, m.dirty = false, true
	}
	m.emit(StartReduce{Step: m.d.Step, Epoch: m.d.Epoch, Attempt: msg.Ballot, Ring: slices.Clone(v.Ring), List: slices.Clone(m.d.List), Links: slices.Clone(v.Links)})
}

func (m *Machine) reduceDone(e ReduceDone) {
	a := &m.att
	if e.Step != m.d.Step || e.Attempt != a.ballot || !a.running {
		return
	}
	a.running, a.ok = false, e.Err == nil && m.submitted
	if a.ok {
		// Persisted with the next state change (this node's accept of the
		// value comes right after its ready), not on its own: that saves
		// an fsync per step; a crash in between only loses the claim.
		v := a.value
		m.d.Result = &v
	}
	m.sendResult()
	if e.Settings && m.submitted {
		m.submitted = false
		m.fail(ReasonSettingsMismatch, "the ring's members disagree on step %d's settings (%v): every trainer must pass the same buffer length, wire type and reduce op, and every node run with the same all-reduce lanes, chunk size and --trusted-network", m.d.Step, e.Err)
	}
}

// sendResult tells the attempt's proposer how this node's all-reduce ended.
func (m *Machine) sendResult() {
	t := MsgFailed
	if m.att.ok {
		t = MsgReady
	}
	m.att.sentAt = m.now
	r := m.at(t)
	r.Ballot = m.att.ballot
	m.send(m.att.ballot.By, r)
}

// heldValue is the attempt whose result this node holds, nil when none.
func (m *Machine) heldValue() *Value {
	if !m.att.ok {
		return nil
	}
	v := m.att.value.clone()
	return &v
}
