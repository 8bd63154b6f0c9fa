package rounds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"time"
)

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
		m.fail(ReasonExcluded, "the mesh formed at step %d never decided a step: join again", m.d.Step)
	}
	m.submitted, m.joinPending = false, false
	m.leaveList()
	m.formedAt = time.Time{}
	if m.trainer != trainerNone {
		m.trainer, m.joinAt = trainerJoining, m.now
	}
	m.reason = "the formed mesh never decided a step; forming again"
}

// dormant reports whether this node's list trains no more while its own
// trainer came back at another step than the list's: FormWait after the
// trainer's join, a majority of the list (this node included) is live and
// says at this epoch or a later one that it does not train (idle,
// joining or forming), and no live member trains. Nobody would admit the
// trainer then (a second job on nodes that stayed up), so the list is
// left and the trainer forms a new mesh. A minority cut off from a
// training majority never sees a majority quiet.
func (m *Machine) dormant() bool {
	if m.trainer != trainerJoining || m.submitted || m.att.running || m.now.Sub(m.joinAt) < m.cfg.FormWait {
		return false
	}
	quiet := 1 // this node: its trainer is joining
	for _, id := range m.d.List {
		p, ok := m.peers[id]
		if id == m.self || !ok || !p.Live {
			continue
		}
		switch {
		case p.Info.State == StateTraining || p.Info.State == StateWaiting:
			return false
		case p.Info.Epoch >= m.d.Epoch:
			quiet++
		}
	}
	return quiet >= majority(len(m.d.List))
}

// leaveDormant: the list is dormant; this node leaves it (as leftOut
// does) and its trainer forms a new mesh, from the step its state is at,
// with the other nodes whose trainers came back.
func (m *Machine) leaveDormant() {
	step := m.d.Step
	m.leaveList()
	m.formedAt = time.Time{}
	m.joinAt = m.now
	m.newJob = true
	m.reason = fmt.Sprintf("no member of the last list (at step %d) is training: forming a new mesh from the trainer's step %d", step, m.startStep)
}

// reform is the operator's answer to a majority of the list that is gone
// for good: this node leaves its list and forms a new mesh, in an epoch
// above every epoch it has seen, at a step no lower than any it has
// applied or seen, with whichever nodes are forming. A step of the old
// epoch that a majority may still decide is never re-decided: the new
// epoch's steps are other pairs (epoch, step).
func (m *Machine) reform(step uint64) {
	if m.submitted {
		m.fail(ReasonExcluded, "the mesh is re-formed by the operator: join again")
	}
	maxE, maxS := m.d.Epoch, m.d.Step
	for _, p := range m.peers {
		maxE, maxS = max(maxE, p.Info.Epoch), max(maxS, p.Info.Step)
	}
	m.d = Durable{Epoch: maxE + 1, Step: max(maxS, step), FormEpoch: m.d.FormEpoch, FormHash: m.d.FormHash}
	m.dirty = true
	m.submitted, m.joinPending, m.behind = false, false, false
	m.resetStep()
	m.formedAt = time.Time{}
	if m.trainer != trainerNone {
		m.trainer, m.joinAt = trainerJoining, m.now
	}
	m.reason = fmt.Sprintf("re-formed by the operator: forming epoch %d from step %d", m.d.Epoch+1, m.d.Step)
}
