package rounds

import (
	"fmt"
	"slices"
)

// recv checks a message against its sender's role and this node's state,
// then acts on it. What does not fit is counted in Dropped and ignored.
func (m *Machine) recv(msg Message) {
	if msg.From == "" || (msg.From == m.self && msg.To != m.self) || msg.Type == 0 || msg.Type >= msgTypeEnd {
		m.drop("malformed")
		return
	}
	if (msg.Value != nil && !m.validValue(*msg.Value)) || (msg.Held != nil && !m.validValue(*msg.Held)) {
		m.drop("bad value")
		return
	}
	switch msg.Type {
	case MsgJoin:
		m.onJoin(msg)
		return
	case MsgFormed:
		m.onFormed(msg)
		return
	case MsgCommit:
		// A non-member, or a member of an older epoch or an older step
		// whose trainer asks to join (the mesh went on without it), is
		// admitted by a commit that names it.
		if !m.member() || (m.trainer == trainerJoining && (msg.Epoch > m.d.Epoch || m.laterAdmission(msg))) {
			m.onAdmit(msg)
			return
		}
	}
	switch {
	case msg.Epoch < m.d.Epoch:
		// A member of an older epoch: this node is no acceptor of it any
		// more. Say so, once per Resend.
		m.catchUp(msg)
		return
	case msg.Epoch > m.d.Epoch && msg.Type == MsgAhead && m.member() && slices.Contains(m.d.List, msg.From):
		if m.majorityStays() {
			// A member re-formed elsewhere (an operator's reform on a
			// minority): a majority of this node's list is still here,
			// in its epoch, and may go on deciding without it.
			m.drop("ahead from a re-formed member while the majority holds")
			return
		}
		m.leftOut(fmt.Sprintf("member %s went on to epoch %d", short(msg.From), msg.Epoch))
		return
	case msg.Epoch != m.d.Epoch:
		m.drop("other epoch")
		return
	}
	if msg.Step < m.d.Step {
		m.catchUp(msg)
		return
	}
	if !m.member() {
		m.drop("not a member")
		return
	}
	if !slices.Contains(m.d.List, msg.From) {
		m.drop("sender not in list")
		return
	}
	if msg.Type == MsgAhead {
		if msg.Step > m.d.Step {
			m.leftOut(fmt.Sprintf("member %s is at step %d, this node at %d", short(msg.From), msg.Step, m.d.Step))
		}
		return
	}
	if msg.Step > m.d.Step {
		// A member of our list is further on: we missed a decision.
		m.askSync(msg.From)
		return
	}
	switch msg.Type {
	case MsgOffer:
		m.offers[msg.From] = true
		if _, ok := m.offerSeen[msg.From]; !ok {
			m.offerSeen[msg.From] = m.now
		}
	case MsgPrepare:
		m.onPrepare(msg)
	case MsgAccept:
		m.onAccept(msg)
	case MsgStart:
		m.onStart(msg)
	case MsgPromise, MsgNack, MsgReady, MsgFailed, MsgAccepted:
		m.onReply(msg)
	case MsgCommit:
		m.decide(*msg.Value)
	case MsgSync:
		// Same step: nothing to tell.
	default:
		m.drop("unexpected " + msg.Type.String())
	}
}

// validValue checks a value's shape: a sorted, non-empty ring drawn from
// the list, an attempt proposed by a ring member.
func (m *Machine) validValue(v Value) bool {
	if len(v.Ring) == 0 || len(v.Ring) > maxList || len(v.Next) > maxList {
		return false
	}
	if !slices.IsSorted(v.Ring) || !slices.IsSorted(v.Next) || len(slices.Compact(slices.Clone(v.Ring))) != len(v.Ring) ||
		len(slices.Compact(slices.Clone(v.Next))) != len(v.Next) {
		return false
	}
	if (v.Links != nil && len(v.Links) != len(v.Ring)) || (v.Shares != nil && len(v.Shares) != len(v.Next)) {
		return false
	}
	if v.Shares != nil {
		var sum uint64
		for _, s := range v.Shares {
			sum += uint64(s)
		}
		if sum != ShareUnits {
			return false
		}
	}
	return slices.Contains(v.Ring, v.Attempt.By)
}

// catchUp answers a member that is behind: with the decision of its step
// when this node still holds it, otherwise with where this node is. Only
// requests are answered, at most once per Resend per peer.
func (m *Machine) catchUp(msg Message) {
	switch msg.Type {
	case MsgOffer, MsgPrepare, MsgStart, MsgAccept, MsgReady, MsgSync:
	default:
		return
	}
	if t, ok := m.syncAt[msg.From]; ok && m.now.Sub(t) < m.cfg.Resend {
		return
	}
	if !m.member() && m.d.Last == nil {
		return
	}
	m.syncAt[msg.From] = m.now
	if l := m.d.Last; l != nil && l.Step == msg.Step && msg.Epoch == m.d.Epoch {
		v := l.Value
		m.send(msg.From, Message{Type: MsgCommit, Step: l.Step, Value: &v})
		return
	}
	m.send(msg.From, m.at(MsgAhead))
}

// askSync asks a member that is further on how this node's step ended.
func (m *Machine) askSync(to ID) {
	if t, ok := m.syncAt[to]; ok && m.now.Sub(t) < m.cfg.Resend {
		return
	}
	m.syncAt[to] = m.now
	m.send(to, m.at(MsgSync))
}

// majorityStays reports whether a majority of the list (this node
// included) is live and has not said it moved to a later epoch.
func (m *Machine) majorityStays() bool {
	n := 0
	for _, id := range m.d.List {
		if p, ok := m.peers[id]; id == m.self || (ok && p.Live && p.Info.Epoch <= m.d.Epoch) {
			n++
		}
	}
	return n >= majority(len(m.d.List))
}
