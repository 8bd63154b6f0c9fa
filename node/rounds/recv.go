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

// nack tells a proposer that this acceptor promised a higher ballot.
func (m *Machine) nack(msg Message) {
	r := m.at(MsgNack)
	r.Ballot, r.Accepted = m.d.Promised, msg.Ballot
	m.send(msg.From, r)
}

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

func (m *Machine) ringInList(v Value) bool {
	for _, id := range v.Ring {
		if !slices.Contains(m.d.List, id) {
			return false
		}
	}
	return true
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

// onFormed: a member says this node is in its list at Step of a newer
// epoch (it formed with this node). Nothing of that epoch happened here,
// so this node takes its place in the list as a fresh acceptor.
func (m *Machine) onFormed(msg Message) {
	v := msg.Value
	switch {
	case v == nil || !slices.Contains(v.Next, m.self) || !slices.Contains(v.Next, msg.From):
		m.drop("formed notice that does not name us")
		return
	case m.member() || m.trainer != trainerJoining:
		m.drop("formed notice while not forming")
		return
	case msg.Epoch <= m.d.Epoch || msg.Step < m.d.Step:
		m.drop("formed notice below this node's history")
		return
	}
	m.d = Durable{Epoch: msg.Epoch, Step: msg.Step, List: slices.Clone(v.Next), FormEpoch: m.d.FormEpoch, FormHash: m.d.FormHash}
	m.dirty = true
	m.resetStep()
	m.formedAt = m.now
	m.asked = map[ID]bool{}
	m.formSet, m.formHash = nil, ""
	m.trainer, m.lastApply = trainerMember, m.now
	m.reason = ""
	m.emit(Admitted{Step: msg.Step, Epoch: msg.Epoch, List: slices.Clone(v.Next), Formed: msg.Step == m.startStep})
}

// heldValue is the attempt whose result this node holds, nil when none.
func (m *Machine) heldValue() *Value {
	if !m.att.ok {
		return nil
	}
	v := m.att.value.clone()
	return &v
}

// short is how a member is named in reasons: libp2p's ShortString, the
// form libp2p's own logs use.
func short(id ID) string { return id.ShortString() }

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
