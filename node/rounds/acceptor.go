package rounds

import "slices"

// onPrepare is phase 1 at an acceptor.
func (m *Machine) onPrepare(msg Message) {
	m.maxN = max(m.maxN, msg.Ballot.N)
	if msg.Ballot.By != msg.From {
		m.drop("prepare for another's ballot")
		return
	}
	if msg.Ballot.Less(m.d.Promised) {
		m.nack(msg)
		return
	}
	if m.d.Promised != msg.Ballot {
		m.d.Promised = msg.Ballot
		m.dirty = true
	}
	r := m.at(MsgPromise)
	r.Ballot, r.Accepted = msg.Ballot, m.d.Accepted
	if m.d.Value != nil {
		v := *m.d.Value
		r.Value = &v
	}
	r.Held = m.heldValue()
	m.send(msg.From, r)
}

// onAccept is phase 2 at an acceptor.
func (m *Machine) onAccept(msg Message) {
	m.maxN = max(m.maxN, msg.Ballot.N)
	if msg.Ballot.By != msg.From || msg.Value == nil || !m.ringInList(*msg.Value) {
		m.drop("accept does not fit")
		return
	}
	if msg.Ballot.Less(m.d.Promised) {
		m.nack(msg)
		return
	}
	v := *msg.Value
	m.d.Promised, m.d.Accepted, m.d.Value = msg.Ballot, msg.Ballot, &v
	m.dirty = true
	if m.acceptHook != nil {
		m.acceptHook(m.d.Epoch, m.d.Step, v)
	}
	r := m.at(MsgAccepted)
	r.Ballot = msg.Ballot
	m.send(msg.From, r)
}

// nack tells a proposer that this acceptor promised a higher ballot.
func (m *Machine) nack(msg Message) {
	r := m.at(MsgNack)
	r.Ballot, r.Accepted = m.d.Promised, msg.Ballot
	m.send(msg.From, r)
}

func (m *Machine) ringInList(v Value) bool {
	for _, id := range v.Ring {
		if !slices.Contains(m.d.List, id) {
			return false
		}
	}
	return true
}
