package rounds

import (
	"slices"
	"time"
)

// Proposal phases.
const (
	phasePromise = 1 // prepare sent: collecting promises from a majority of the list
	phaseReduce  = 2 // start sent: the ring all-reduces; collecting readies
	phaseAccept  = 3 // accept sent: collecting accepts from a majority of the list
)

// proposal is this node's attempt to decide the open step (single-decree
// Paxos over the agreed list, whose value names an all-reduce attempt).
type proposal struct {
	ballot   Ballot
	phase    int
	at       time.Time // phase start; in phaseReduce, its last progress
	sentAt   time.Time
	promises map[ID]Message
	value    Value
	readies  map[ID]bool
	accepts  map[ID]bool
}

func (m *Machine) onReply(msg Message) {
	p := m.prop
	b := msg.Ballot
	if msg.Type == MsgNack {
		b = msg.Accepted
	}
	if p == nil || b != p.ballot {
		m.drop("stale reply")
		return
	}
	switch {
	case msg.Type == MsgNack:
		if p.ballot.Less(msg.Ballot) {
			m.maxN = max(m.maxN, msg.Ballot.N)
			m.abandon()
		}
	case msg.Type == MsgPromise && p.phase == phasePromise:
		p.promises[msg.From] = msg
		if len(p.promises) >= majority(len(m.d.List)) {
			m.choose()
		}
	case (msg.Type == MsgReady || msg.Type == MsgFailed) && p.phase == phaseReduce:
		if !slices.Contains(p.value.Ring, msg.From) {
			m.drop("ready from outside the ring")
			return
		}
		if msg.Type == MsgFailed {
			if msg.Held != nil && m.ringInList(*msg.Held) {
				m.hint = msg.Held
			} else {
				// It offers again if it still can.
				delete(m.offers, msg.From)
			}
			m.abandon()
			return
		}
		if !p.readies[msg.From] {
			// Progress: a member finished. A ready sent again (every
			// Resend until the step is decided) is none, or a proposer
			// holding its own result would never time the phase out.
			p.readies[msg.From] = true
			p.at = m.now
		}
		if len(p.readies) == len(p.value.Ring) {
			m.toAccept()
		}
	case msg.Type == MsgAccepted && p.phase == phaseAccept:
		p.accepts[msg.From] = true
		if len(p.accepts) >= majority(len(m.d.List)) {
			v := p.value
			to := sortIDs(append(slices.Clone(m.d.List), v.Next...))
			c := m.at(MsgCommit)
			c.Ballot, c.Value = p.ballot, &v
			m.sendAll(to, c)
		}
	}
}

// choose ends phase 1: a value accepted earlier must be proposed again
// (the highest ballot's); otherwise this proposal runs a new all-reduce
// over the members that offered.
func (m *Machine) choose() {
	p := m.prop
	var best *Message
	for _, r := range p.promises {
		if r.Value != nil && !r.Accepted.IsZero() && (best == nil || best.Accepted.Less(r.Accepted)) {
			best = &r
		}
	}
	if best != nil {
		p.value = *best.Value
		m.toAccept()
		return
	}
	// No value accepted in the quorum, so any value may be proposed: an
	// attempt whose result a member holds is preferred to a new
	// all-reduce (its holders never give those bytes up for another
	// attempt of the step).
	for _, r := range p.promises {
		if r.Held != nil && m.ringInList(*r.Held) && (m.hint == nil || m.hint.Attempt.Less(r.Held.Attempt)) {
			m.hint = r.Held
		}
	}
	if m.hint != nil {
		p.value = *m.hint
		m.toAccept()
		return
	}
	ring := []ID{m.self}
	for id := range m.offers {
		if id != m.self && m.offering(id) {
			ring = append(ring, id)
		}
	}
	ring = sortIDs(ring)
	if !m.submitted {
		m.abandon()
		return
	}
	next := slices.Clone(ring)
	for id, t := range m.joiners {
		if m.now.Sub(t) <= m.cfg.JoinTTL && m.live(id) && !slices.Contains(ring, id) {
			next = append(next, id)
		}
	}
	next = sortIDs(next)
	p.value = Value{Attempt: p.ballot, Ring: ring, Next: next, Links: m.ringLinks(ring), Shares: m.planShares(ring, next)}
	p.phase, p.at, p.sentAt, p.readies = phaseReduce, m.now, m.now, map[ID]bool{}
	v := p.value
	m.sendAll(ring, m.phaseMsg(MsgStart, &v))
}

func (m *Machine) toAccept() {
	p := m.prop
	p.phase, p.at, p.sentAt, p.accepts = phaseAccept, m.now, m.now, map[ID]bool{}
	v := p.value
	m.sendAll(m.d.List, m.phaseMsg(MsgAccept, &v))
}

// phaseMsg is a message of the current proposal.
func (m *Machine) phaseMsg(t MsgType, v *Value) Message {
	r := m.at(t)
	r.Ballot, r.Value = m.prop.ballot, v
	return r
}

// abandon drops the proposal; a new ballot follows after a backoff.
func (m *Machine) abandon() {
	m.prop = nil
	m.fails++
	d := m.cfg.RetryBackoff << min(m.fails-1, 5)
	m.retryAt = m.now.Add(min(d, 20*m.cfg.RetryBackoff))
}

func (m *Machine) propose() {
	n := max(m.maxN, m.d.Promised.N) + 1
	m.maxN = n
	p := &proposal{ballot: Ballot{N: n, By: m.self}, phase: phasePromise, at: m.now, sentAt: m.now, promises: map[ID]Message{}}
	m.prop = p
	m.sendAll(m.d.List, m.phaseMsg(MsgPrepare, nil))
}

// resendPhase sends the current phase's message again to whoever has not
// answered.
func (m *Machine) resendPhase() {
	p := m.prop
	p.sentAt = m.now
	v := p.value
	for _, id := range m.d.List {
		switch p.phase {
		case phasePromise:
			if _, ok := p.promises[id]; !ok {
				m.send(id, m.phaseMsg(MsgPrepare, nil))
			}
		case phaseReduce:
			if slices.Contains(v.Ring, id) && !p.readies[id] {
				m.send(id, m.phaseMsg(MsgStart, &v))
			}
		case phaseAccept:
			if !p.accepts[id] {
				m.send(id, m.phaseMsg(MsgAccept, &v))
			}
		}
	}
}

func (m *Machine) tickProposer(waiting string) {
	if p := m.prop; p != nil {
		switch {
		case m.now.Sub(p.at) > m.phaseTimeout(p.phase):
			m.abandon()
		case p.phase == phaseReduce && m.ringLost(p.value.Ring):
			m.abandon()
		case m.now.Sub(p.sentAt) >= m.cfg.Resend:
			m.resendPhase()
		}
		return
	}
	if !m.submitted || m.now.Before(m.retryAt) || waiting != "" || !m.isLeader() {
		return
	}
	if !m.offersComplete() && m.now.Sub(m.submitAt) < m.cfg.OfferWait {
		return
	}
	if m.d.Last == nil && m.offerCount() < m.cfg.MinMembers && m.now.Sub(m.submitAt) < m.cfg.OfferWait {
		// A list's first step waits for MinMembers members' trainers (a
		// list can exist before its trainers do: formed by an earlier
		// job, or with a trainer that went away), up to OfferWait.
		return
	}
	m.propose()
}

// offerCount is how many members that offered the open step can still
// take part (this node included).
func (m *Machine) offerCount() int {
	n := 0
	for _, id := range m.d.List {
		if m.offering(id) {
			n++
		}
	}
	return n
}

// reduceProgress restarts the clock of this node's proposal's all-reduce
// phase while its own all-reduce of that attempt moves bytes: the proposer
// is in the ring, and a ring that stalls anywhere stalls every member
// within a few chunks.
func (m *Machine) reduceProgress(e ReduceProgress) {
	if p := m.prop; p != nil && p.phase == phaseReduce && e.Step == m.d.Step && e.Attempt == p.ballot {
		p.at = m.now
	}
}

// phaseTimeout bounds a phase of this node's proposal. A buffer that
// comes in parts is reduced while the trainers still compute it, so its
// reduce phase may also take as long as a trainer may (TrainerTimeout;
// the default's 5 minutes when that is off).
func (m *Machine) phaseTimeout(ph int) time.Duration {
	if ph != phaseReduce || !m.inParts {
		return m.cfg.PhaseTimeout
	}
	grace := m.cfg.TrainerTimeout
	if grace <= 0 {
		grace = 5 * time.Minute
	}
	return m.cfg.PhaseTimeout + grace
}

// ringLost reports whether the view dropped a ring member.
func (m *Machine) ringLost(ring []ID) bool {
	for _, id := range ring {
		if !m.live(id) {
			return true
		}
	}
	return false
}

// isLeader: this node is the lowest-ID member that offered and can still
// take part. Views can differ for a moment, so two nodes may propose at
// once; ballots keep that safe and the backoff ends it.
func (m *Machine) isLeader() bool {
	for id := range m.offers {
		if id < m.self && m.offering(id) {
			return false
		}
	}
	return true
}

// offering reports whether a member that offered still can take part: it
// is live and its heartbeat does not say its trainer is gone or behind.
func (m *Machine) offering(id ID) bool {
	if id == m.self {
		return m.submitted
	}
	if !m.offers[id] || !slices.Contains(m.d.List, id) {
		return false
	}
	p, ok := m.peers[id]
	if !ok || !p.Live {
		return false
	}
	if !m.heardAt(p) {
		return true // its heartbeat predates the open step
	}
	return p.Info.State != StateIdle && p.Info.State != StateJoining
}

// heardAt reports whether p's heartbeat speaks of the open step or a later
// one (not of what it did before).
func (m *Machine) heardAt(p Peer) bool { return p.Info.Epoch == m.d.Epoch && p.Info.Step >= m.d.Step }

// offersComplete: every live member that trains has offered.
func (m *Machine) offersComplete() bool {
	for _, id := range m.d.List {
		if id == m.self || m.offers[id] {
			continue
		}
		p, ok := m.peers[id]
		if !ok || !p.Live {
			continue
		}
		if !m.heardAt(p) {
			// Its heartbeat predates the open step (heartbeats are slower
			// than steps): what it said then, joining or idle, may be
			// over. Expect it.
			return false
		}
		if p.Info.State == StateIdle || p.Info.State == StateJoining {
			continue
		}
		return false
	}
	return true
}

// WaitingFor lists the members of the list whose offer of the open step
// this node, having submitted it, still waits for: live, and training as
// far as their heartbeats say (the members offersComplete waits for).
// Status shows them: a step that does not go on names whom it waits for.
func (m *Machine) WaitingFor() []ID {
	if !m.submitted || !m.member() {
		return nil
	}
	var out []ID
	for _, id := range m.d.List {
		if id == m.self || m.offers[id] {
			continue
		}
		p, ok := m.peers[id]
		if !ok || !p.Live || (m.heardAt(p) && (p.Info.State == StateIdle || p.Info.State == StateJoining)) {
			continue
		}
		out = append(out, id)
	}
	return out
}
