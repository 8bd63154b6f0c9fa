package rounds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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

// tick does what time asks for: resends, timeouts, proposals, joins and
// formation.
func (m *Machine) tick() {
	for id, t := range m.joiners {
		if m.now.Sub(t) > m.cfg.JoinTTL {
			delete(m.joiners, id)
		}
	}
	if !m.member() {
		m.tickOutside()
		return
	}
	m.newJob = false // it is a member again
	if m.trainer == trainerMember && !m.submitted && !m.joinPending && m.cfg.TrainerTimeout > 0 && m.now.Sub(m.lastApply) > m.cfg.TrainerTimeout {
		m.trainer = trainerNone
		m.reason = fmt.Sprintf("excluded: the trainer did not submit step %d within %s", m.d.Step, m.cfg.TrainerTimeout)
	}
	if m.dormant() {
		m.leaveDormant()
		return
	}
	if m.trainer == trainerJoining {
		// A member whose trainer's state is not at the open step joins at
		// the next one like any joiner (and stays an acceptor meanwhile).
		m.joiners[m.self] = m.now
		m.askJoin(sortIDs(append(slices.Clone(m.d.List), m.trainingPeers()...)))
		m.reason = fmt.Sprintf("waiting for a training member to admit the trainer (at step %d) at the mesh's next step (%d)", m.startStep, m.d.Step+1)
	}
	if m.d.Last == nil && (m.formedAt.IsZero() || m.listAgrees()) {
		// Restarted in a list that has not decided yet, or a majority of
		// the list says it holds the same list: the formation stands.
		m.formedAt = m.now
	}
	if m.d.Last == nil && m.now.Sub(m.formedAt) > m.cfg.FormTimeout {
		// Formed, but the list never decided a step: too few of its
		// members took their place in it. Form again (a newer epoch).
		m.abandonFormation()
		return
	}
	waiting := m.waitingReason()
	if waiting != "" {
		// A member of the list that went on to a newer epoch (the
		// operator re-formed the mesh there): ask it; its answer, not its
		// heartbeat, takes this node out of the list.
		for _, id := range m.d.List {
			if p, ok := m.peers[id]; ok && p.Live && p.Info.Epoch > m.d.Epoch {
				m.askSync(id)
			}
		}
	}
	if m.joinPending && waiting == "" {
		if ahead := m.aheadPeer(); ahead != "" && m.now.Sub(m.joinAt) < m.cfg.JoinTTL {
			// A member of the list says it is further on (a restarted
			// node's list may be long gone): ask it before the trainer is
			// told this step. The heartbeat only delays the answer; the
			// sync reply decides, and JoinTTL bounds the wait.
			m.askSync(ahead)
		} else {
			m.joinPending, m.lastApply = false, m.now
			a := Admitted{Step: m.trainerStep(), Epoch: m.d.Epoch, List: slices.Clone(m.d.List), Formed: true}
			if a.Step == m.d.Step {
				a.Shares = m.openShares()
			}
			m.emit(a)
		}
	}
	if waiting != "" && m.submitted && !m.att.ok && !m.att.running {
		m.submitted = false
		m.fail(CodeWaiting, "not in the majority, waiting to rejoin: %s", waiting)
	}
	if m.submitted && m.now.Sub(m.offerAt) >= m.cfg.Resend {
		m.offerAt = m.now
		m.sendAll(m.d.List, m.at(MsgOffer))
	}
	if !m.att.ballot.IsZero() && !m.att.running && m.now.Sub(m.att.sentAt) >= m.cfg.Resend {
		m.sendResult()
	}
	m.tickProposer(waiting)
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

// tickOutside: a node outside any list whose trainer wants to train asks
// a training mesh to admit it, or forms a new mesh with the other forming
// nodes once none trains.
func (m *Machine) tickOutside() {
	if m.trainer != trainerJoining {
		return
	}
	if tp := m.trainingPeers(); tp != nil {
		for _, id := range tp {
			// A peer that formed with the set this node proposed: follow.
			p := m.peers[id]
			if m.formSet != nil && p.Info.List == listHash(m.formSet) && p.Info.Epoch == m.formE && p.Info.Step == m.formS {
				m.form()
				return
			}
		}
		m.askJoin(tp)
		return
	}
	if !m.settled || m.now.Sub(m.joinAt) < m.cfg.FormWait || m.now.Sub(m.peerAt) < m.cfg.FormWait {
		m.reason = "looking for a training mesh"
		return
	}
	set := []ID{m.self}
	var forming []Peer
	// The new mesh starts no lower than the trainer's state, this node's
	// own step and any step a present peer announces (step numbers name
	// checkpoints), in an epoch above every epoch a present peer
	// announces. A new job on nodes whose list went dormant (newJob)
	// starts where its trainers say, however far the old list went: its
	// epoch is new, so an (epoch, step) pair is still never decided twice.
	s, e := max(m.startStep, m.d.Step), m.d.Epoch
	if m.newJob {
		s = m.startStep
	}
	for id, p := range m.peers {
		if !p.Live {
			continue
		}
		e = max(e, p.Info.Epoch)
		if !m.newJob || p.Info.State == StateForming {
			s = max(s, p.Info.Step)
		}
		if p.Info.State == StateForming {
			set = append(set, id)
			forming = append(forming, p)
		}
	}
	m.formSet, m.formS, m.formE = sortIDs(set), s, max(e+1, m.d.FormEpoch)
	m.formHash = formHash(m.formSet, m.formS, m.formE)
	if m.formE == m.d.FormEpoch && m.formHash != m.d.FormHash {
		// Another set or start step than the one advertised at this
		// epoch, which its lowest member may have formed already.
		m.formE++
		m.formHash = formHash(m.formSet, m.formS, m.formE)
	}
	if m.formHash != m.d.FormHash {
		// Persisted before the heartbeat that advertises it.
		m.d.FormEpoch, m.d.FormHash = m.formE, m.formHash
		m.dirty = true
	}
	if len(set) < m.cfg.MinMembers {
		m.reason = fmt.Sprintf("waiting for %d members to form a mesh, %d present", m.cfg.MinMembers, len(set))
		return
	}
	for _, p := range forming {
		if p.Info.List != m.formHash {
			m.reason = "waiting for the forming members to agree"
			return
		}
	}
	if m.formSet[0] != m.self {
		// The lowest ID of the set forms it and tells the others, so that
		// heartbeats seen at different moments cannot form two lists.
		m.reason = "waiting for " + short(m.formSet[0]) + " to form the mesh"
		return
	}
	formed := m.formSet
	m.form()
	r := m.at(MsgFormed)
	r.Value = &Value{Attempt: Ballot{By: m.self}, Ring: []ID{m.self}, Next: slices.Clone(formed)}
	for _, id := range formed {
		if id != m.self {
			m.send(id, r)
		}
	}
}

// form starts a new mesh with the forming set.
func (m *Machine) form() {
	start, epoch, set := m.formS, m.formE, m.formSet
	m.d = Durable{Epoch: epoch, Step: start, List: slices.Clone(set), FormEpoch: m.d.FormEpoch, FormHash: m.d.FormHash}
	m.dirty = true
	m.resetStep()
	m.formedAt = m.now
	m.formSet, m.formHash = nil, ""
	m.trainer, m.lastApply = trainerMember, m.now
	m.reason = ""
	m.newJob = false
	m.emit(Admitted{Step: start, Epoch: epoch, List: slices.Clone(set), Formed: start == m.startStep})
}

func formHash(set []ID, start, epoch uint64) string {
	return listHash(append(slices.Clone(set), ID(fmt.Sprintf("%d/%d", start, epoch))))
}

// listHash identifies a list in heartbeats (a hex prefix of SHA-256).
func listHash(ids []ID) string {
	h := sha256.New()
	for _, id := range ids {
		h.Write([]byte{byte(len(id))})
		h.Write([]byte(id))
	}
	return hex.EncodeToString(h.Sum(nil)[:6])
}

// listAgrees reports whether a majority of the list (self included)
// advertises this node's epoch and list.
func (m *Machine) listAgrees() bool {
	h, n := listHash(m.d.List), 0
	for _, id := range m.d.List {
		p, ok := m.peers[id]
		if id == m.self || (ok && p.Live && p.Info.Epoch == m.d.Epoch && p.Info.List == h) {
			n++
		}
	}
	return n >= majority(len(m.d.List))
}

func (m *Machine) abandonFormation() {
	if m.submitted {
		m.fail(CodeExcluded, "the mesh formed at step %d never decided a step: join again", m.d.Step)
	}
	m.submitted, m.joinPending = false, false
	m.leaveList()
	m.formedAt = time.Time{}
	if m.trainer != trainerNone {
		m.trainer, m.joinAt = trainerJoining, m.now
	}
	m.reason = "the formed mesh never decided a step; forming again"
}
