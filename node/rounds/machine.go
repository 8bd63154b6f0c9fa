package rounds

import (
	"fmt"
	"slices"
	"time"
)

// Machine is the round, join and recovery protocol of one node. It does no
// I/O, reads no clock and starts no goroutine: node feeds it events with
// Step and performs the effects it returns. It is not safe for concurrent
// use.
type Machine struct {
	cfg  Config
	self ID
	now  time.Time
	d    Durable

	trainer   int
	startStep uint64
	joinAt    time.Time
	submitted bool
	inParts   bool // the submitted buffer comes in parts (Submit.InParts)
	// applyAtReady: the held result of the last step, owed to a trainer
	// that submitted that step in parts; emitted at PartsReady, once the
	// trainer has written every part (a copy into its buffer before would
	// be overwritten by the parts it still writes).
	applyAtReady *Apply
	// joinPending: the trainer's join is answered once the member is
	// not waiting.
	joinPending bool
	// behind: the trainer is a member whose state is at the decided step
	// d.Last.Step, whose result this node holds (see heldLast): its next
	// Submit is of that step and is answered with Apply.
	behind bool
	// owed: a trainer that was a member, its join answered, was dropped
	// to joining without being told (it had not submitted; a join still
	// pending is answered by the later Admitted instead). Even if this
	// node is admitted again on its behalf, the trainer's state is that of
	// its old step, so its next Submit is answered excluded: join again.
	owed      bool
	submitAt  time.Time
	lastApply time.Time
	formedAt  time.Time // when this node took its place in a newly formed list
	// newJob: this node left a dormant list for a trainer that came back
	// at another step (a new job): it forms from the trainer's step and
	// the forming peers', not from the old list's (see tickOutside).
	newJob bool

	peers   map[ID]Peer
	peerAt  time.Time // when the view last gained a live peer
	settled bool

	offers  map[ID]bool
	offerAt time.Time
	// stepAt is when this node opened the step, offerSeen when each
	// member's first offer of it arrived: the proposer's own measure of
	// the members' speeds.
	stepAt    time.Time
	offerSeen map[ID]time.Time
	speed     float64 // own trainer, share units per second (smoothed)
	link      Link
	att       attempt
	prop      *proposal
	hint      *Value // a value a ring member accepted and holds the result of
	maxN      uint64
	retryAt   time.Time
	fails     int

	joiners  map[ID]time.Time
	askAt    time.Time
	asked    map[ID]bool
	syncAt   map[ID]time.Time
	formHash string // hash of (formSet, formS, formE): what forming peers must agree on
	formSet  []ID
	formS    uint64
	formE    uint64

	state, reason string
	published     Info
	dirty         bool
	queue         []Message
	out           []Effect

	// acceptHook, when set (by tests), sees every value this node accepts.
	acceptHook func(epoch, step uint64, v Value)

	// Dropped counts messages dropped because they did not fit the
	// sender's role or the node's state, by reason.
	Dropped map[string]uint64
}

// New returns the machine of node self, resuming from d (the zero Durable
// for a node that never was a member).
func New(cfg Config, self ID, d Durable) *Machine {
	m := &Machine{cfg: cfg, self: self, d: d, peers: map[ID]Peer{}, joiners: map[ID]time.Time{},
		asked: map[ID]bool{}, syncAt: map[ID]time.Time{}, Dropped: map[string]uint64{}}
	m.resetStep()
	if r := d.Result; r != nil {
		m.att = attempt{ballot: r.Attempt, value: *r, ok: true}
	}
	m.state = StateIdle
	return m
}

// Durable returns the state to persist.
func (m *Machine) Durable() Durable { return m.d }

// State returns the node state and why.
func (m *Machine) State() (state, reason string) { return m.state, m.reason }

// NextStep returns the step the mesh decides next and its agreed list.
func (m *Machine) NextStep() (epoch, step uint64, list []ID) { return m.d.Epoch, m.d.Step, m.d.List }

// Step feeds one event at time now and returns the effects to perform, in
// order.
func (m *Machine) Step(now time.Time, ev Event) []Effect {
	m.now, m.out = now, nil
	switch e := ev.(type) {
	case Recv:
		m.recv(e.Msg)
	case ViewChanged:
		old := m.peers
		m.peers = make(map[ID]Peer, len(e.Peers))
		for _, p := range e.Peers {
			if p.ID != m.self {
				m.peers[p.ID] = p
				if o, ok := old[p.ID]; p.Live && (!ok || !o.Live) {
					m.peerAt = now
				}
			}
		}
		m.settled = e.Settled
	case TrainerJoin:
		m.trainerJoin(e.StartStep, e.NeedState, e.Resync)
	case TrainerLeave:
		m.trainerGone(e.Reason)
	case Submit:
		m.submit(e.Step, e.Sized && !e.InParts, e.InParts)
		m.inParts = e.InParts && m.submitted
	case PartsReady:
		if e.Sized && m.submitted && e.Step == m.d.Step {
			m.measure()
		}
		if a := m.applyAtReady; a != nil && a.Step == e.Step {
			m.applyAtReady = nil
			m.emit(*a)
		}
	case ReduceDone:
		m.reduceDone(e)
	case ReduceProgress:
		m.reduceProgress(e)
	case Reform:
		m.reform(e.Step)
	case SetLink:
		m.link = e.Link
	case Tick:
	}
	m.drain()
	m.tick()
	m.drain()
	return m.flush()
}

// drain delivers the messages this node sent to itself.
func (m *Machine) drain() {
	for len(m.queue) > 0 {
		msg := m.queue[0]
		m.queue = m.queue[1:]
		m.recv(msg)
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
		m.fail(ReasonWaiting, "not in the majority, waiting to rejoin: %s", waiting)
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

func (m *Machine) flush() []Effect {
	m.setState()
	info := m.info()
	if info != m.published {
		m.published = info
		m.out = append(m.out, Publish{Info: info})
	}
	out := m.out
	if m.dirty {
		m.dirty = false
		out = append([]Effect{Persist{State: m.durableCopy()}}, out...)
	}
	m.out = nil
	return out
}

func (m *Machine) durableCopy() Durable {
	d := m.d
	d.List = slices.Clone(d.List)
	return d
}

func (m *Machine) emit(e Effect) { m.out = append(m.out, e) }

// send addresses msg to to; a message to self is delivered within Step.
func (m *Machine) send(to ID, msg Message) {
	msg.From, msg.To, msg.Epoch = m.self, to, m.d.Epoch
	if to == m.self {
		m.queue = append(m.queue, msg)
		return
	}
	m.emit(Send{Msg: msg})
}

func (m *Machine) sendAll(ids []ID, msg Message) {
	for _, id := range ids {
		m.send(id, msg)
	}
}

func (m *Machine) drop(why string) { m.Dropped[why]++ }

func (m *Machine) member() bool { return slices.Contains(m.d.List, m.self) }

func (m *Machine) live(id ID) bool {
	if id == m.self {
		return true
	}
	p, ok := m.peers[id]
	return ok && p.Live
}

func majority(n int) int { return n/2 + 1 }

// resetStep clears what belongs to one open step.
func (m *Machine) resetStep() {
	m.offers = map[ID]bool{}
	m.offerSeen = map[ID]time.Time{}
	m.stepAt = m.now
	m.att = attempt{}
	m.prop = nil
	m.hint = nil
	m.fails = 0
	m.retryAt = time.Time{}
}

// decide applies the decision of the open step.
func (m *Machine) decide(v Value) {
	step, list := m.d.Step, m.d.List
	inRing := slices.Contains(v.Ring, m.self)
	held := inRing && m.att.ballot == v.Attempt && m.att.ok && slices.Contains(v.Next, m.self)
	applied := false
	switch {
	case held && m.submitted && m.trainer == trainerMember:
		m.emit(Apply{Step: step, Value: v})
		applied = true
	case m.submitted:
		m.fail(ReasonExcluded, "the mesh decided step %d without this node's result: join again", step)
	}
	// A trainer that has not submitted the step (it joined again after a
	// restart, or left) can still apply it: this node holds its result.
	m.behind = false
	if m.joinPending {
		if held {
			// The trainer's join waited at this step: it is a member at
			// it, one step behind the mesh.
			m.joinPending, m.behind, m.lastApply = false, true, m.now
			m.emit(Admitted{Step: step, Epoch: m.d.Epoch, List: slices.Clone(list), Formed: true})
		} else {
			// The trainer's join waited while the step was decided without it.
			m.joinPending, m.trainer = false, trainerJoining
		}
	} else if held && !applied && m.trainer == trainerMember {
		m.behind = true
	}
	m.formedAt = time.Time{}
	m.d.Last = &Decided{Step: step, Value: v}
	m.d.LastHeld = held && !applied
	m.d.Step = step + 1
	m.d.List = slices.Clone(v.Next)
	m.d.Promised, m.d.Accepted, m.d.Value, m.d.Result = Ballot{}, Ballot{}, nil, nil
	m.dirty = true
	m.submitted = false
	m.resetStep()
	for _, id := range v.Next {
		delete(m.joiners, id)
	}
	if !slices.Contains(v.Next, m.self) {
		m.d.List = nil
		if m.trainer == trainerMember {
			m.trainer, m.owed = trainerJoining, !m.joinPending
			m.joinAt = m.now
		}
		if m.trainer != trainerNone {
			// A node without a trainer keeps saying why it has none.
			m.reason = fmt.Sprintf("left out of the list for step %d", step+1)
		}
		return
	}
	switch {
	case m.trainer == trainerMember && (applied || m.behind):
		m.lastApply = m.now
	case m.trainer == trainerMember:
		// A member whose trainer did not take part, or whose result was
		// not the one decided, cannot follow: its state is behind the
		// mesh's.
		m.trainer = trainerJoining
		m.joinAt = m.now
		m.joiners[m.self] = m.now
	case m.trainer == trainerJoining:
		m.trainer, m.lastApply = trainerMember, m.now
		m.emit(Admitted{Step: step + 1, Epoch: m.d.Epoch, List: slices.Clone(m.d.List), Shares: m.openShares()})
	}
}

// leftOut: the mesh went past this node's step without it.
func (m *Machine) leftOut(why string) {
	if m.submitted {
		m.fail(ReasonExcluded, "the mesh went on without this node (%s): join again", why)
	}
	m.submitted = false
	m.leaveList()
	if m.trainer == trainerMember {
		// A submitted step was answered excluded above; a trainer that
		// had not submitted learns it at its next Submit.
		m.trainer, m.owed = trainerJoining, !m.joinPending
		m.joinAt = m.now
	}
	m.reason = "the mesh went on without this node: " + why
}

// leaveList takes this node out of its list. It was an acceptor of the
// open step and forgets that now, so it may only be admitted at a later
// step.
func (m *Machine) leaveList() {
	m.d.List = nil
	m.d.Step++
	m.d.Promised, m.d.Accepted, m.d.Value, m.d.Result = Ballot{}, Ballot{}, nil, nil
	m.dirty = true
	m.resetStep()
}

func (m *Machine) setState() {
	switch {
	case m.member() && m.trainer == trainerJoining:
		m.state = StateJoining
	case m.member() && m.trainer == trainerMember:
		if w := m.waitingReason(); w != "" {
			m.state, m.reason = StateWaiting, w
		} else {
			m.state, m.reason = StateTraining, ""
		}
	case m.member():
		m.state = StateIdle
	case m.trainer == trainerJoining && m.trainingPeers() != nil:
		m.state = StateJoining
	case m.trainer == trainerJoining:
		m.state = StateForming
	default:
		m.state = StateIdle
	}
}

// waitingReason says why a member cannot train now: too few members of
// its list are reachable.
func (m *Machine) waitingReason() string {
	n := 0
	for _, id := range m.d.List {
		if m.live(id) {
			n++
		}
	}
	if n >= majority(len(m.d.List)) {
		return ""
	}
	return fmt.Sprintf("not in the majority: %d of %d members of the last agreed list reachable; "+
		"if the others are gone for good, `ringmesh reform` re-forms the mesh as a new epoch", n, len(m.d.List))
}

func (m *Machine) info() Info {
	i := Info{State: m.state, Epoch: m.d.Epoch, Step: m.d.Step, Speed: uint64(m.speed), Link: m.link}
	switch {
	case m.member():
		i.List = listHash(m.d.List)
	case m.state == StateForming:
		// Epoch: the one the advertised formation builds on, so that
		// peers that agree with it compute the same epoch.
		if m.formE > 0 {
			i.Epoch = max(i.Epoch, m.formE-1)
		}
		i.Step = m.formS
		i.List = m.formHash
	}
	return i
}

// at returns a message of type t about the open step.
func (m *Machine) at(t MsgType) Message { return Message{Type: t, Step: m.d.Step} }

// short is how a member is named in reasons: libp2p's ShortString, the
// form libp2p's own logs use.
func short(id ID) string { return id.ShortString() }
