package rounds

import "slices"

// askJoin sends a join request to each live peer of ids, every JoinPoll.
func (m *Machine) askJoin(ids []ID) {
	if m.now.Sub(m.askAt) < m.cfg.JoinPoll {
		return
	}
	m.askAt = m.now
	for _, id := range ids {
		if id != m.self && m.live(id) {
			m.asked[id] = true
			m.send(id, m.at(MsgJoin))
		}
	}
}

// trainingPeers lists the live peers that advertise a mesh at this node's
// epoch or a later one.
func (m *Machine) trainingPeers() []ID {
	var out []ID
	for id, p := range m.peers {
		if p.Live && (p.Info.State == StateTraining || p.Info.State == StateWaiting) && p.Info.Epoch >= m.d.Epoch {
			out = append(out, id)
		}
	}
	return sortIDs(out)
}

// onJoin records a join request; a joiner that was admitted but missed
// the commit gets it again.
func (m *Machine) onJoin(msg Message) {
	if !m.member() || msg.Epoch > m.d.Epoch {
		m.drop("join while not a member")
		return
	}
	// A joiner's step counts only within this node's epoch: one from an
	// older epoch is admitted at any step of this one.
	if l := m.d.Last; l != nil && slices.Contains(l.Value.Next, msg.From) && (msg.Epoch < m.d.Epoch || msg.Step <= l.Step+1) {
		v := l.Value
		m.send(msg.From, Message{Type: MsgCommit, Step: l.Step, Value: &v})
		return
	}
	if msg.Epoch < m.d.Epoch && slices.Contains(m.d.List, msg.From) {
		// It was in the forming set this node formed with, but did not
		// see the mesh form: tell it.
		r := m.at(MsgFormed)
		r.Value = &Value{Attempt: Ballot{By: m.self}, Ring: []ID{m.self}, Next: slices.Clone(m.d.List)}
		m.send(msg.From, r)
		return
	}
	if len(m.joiners) < maxList || m.joiners[msg.From] != m.now {
		m.joiners[msg.From] = m.now
	}
}

// laterAdmission: msg is a commit of a later step of this node's epoch
// that names this node in its next list.
func (m *Machine) laterAdmission(msg Message) bool {
	return msg.Epoch == m.d.Epoch && msg.Step > m.d.Step && msg.Value != nil && slices.Contains(msg.Value.Next, m.self)
}

// onAdmit: a commit reaching a node outside the list admits it when the
// commit names it in the next list and this node asked to join. A member
// of an older step (its list went on without it, but a training member
// admitted it) leaves its list for the later one: it never acts as an
// acceptor of its old step again.
func (m *Machine) onAdmit(msg Message) {
	v := msg.Value
	switch {
	case v == nil || !slices.Contains(v.Next, m.self):
		m.drop("commit for a non-member")
		return
	case m.trainer != trainerJoining || !m.asked[msg.From]:
		m.drop("unasked admission")
		return
	case msg.Epoch < m.d.Epoch || (msg.Epoch == m.d.Epoch && msg.Step+1 < m.d.Step) || (msg.Epoch == m.d.Epoch && m.member() && msg.Step <= m.d.Step):
		// A member is an acceptor of its open step: it may only be
		// admitted at a later one.
		m.drop("admission below this node's history")
		return
	}
	m.d.Epoch, m.d.Step = msg.Epoch, msg.Step+1
	m.d.List = slices.Clone(v.Next)
	m.d.Promised, m.d.Accepted, m.d.Value, m.d.Result = Ballot{}, Ballot{}, nil, nil
	m.d.Last, m.d.LastHeld = &Decided{Step: msg.Step, Value: *v}, false
	m.dirty = true
	m.resetStep()
	m.asked = map[ID]bool{}
	m.trainer, m.lastApply = trainerMember, m.now
	m.reason = ""
	m.emit(Admitted{Step: m.d.Step, Epoch: m.d.Epoch, List: slices.Clone(m.d.List), Shares: m.openShares()})
}
