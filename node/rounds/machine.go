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

// attempt is this node's part in one all-reduce of the open step.
type attempt struct {
	ballot  Ballot
	value   Value
	running bool
	ok      bool // the all-reduce succeeded: the scratch buffer holds its result
	sentAt  time.Time
}

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
		m.submit(e.Step, e.Sized && !e.InParts)
		m.inParts = e.InParts && m.submitted
	case PartsReady:
		if e.Sized && m.submitted && e.Step == m.d.Step {
			m.measure()
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

// trainerJoin: a trainer whose state is at start wants to train. One
// that resyncs holds a state that is not the list's at any step.
func (m *Machine) trainerJoin(start uint64, needState, resync bool) {
	m.startStep, m.joinAt = start, m.now
	m.submitted, m.joinPending, m.owed = false, false, false
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
	m.trainer, m.submitted, m.joinPending, m.behind = trainerNone, false, false, false
	m.reason = reason
}

func (m *Machine) fail(code, format string, args ...any) {
	m.emit(Fail{Code: code, Msg: fmt.Sprintf(format, args...), NextStep: m.d.Step})
}

func (m *Machine) submit(step uint64, sized bool) {
	switch {
	case m.trainer != trainerMember || !m.member() || m.joinPending:
		m.fail(CodeNotMember, "node is %s, not a training member: call join first", m.state)
	case m.submitted:
		m.fail(CodeBusy, "an all-reduce for step %d is already in flight", m.d.Step)
	case m.owed:
		m.fail(CodeExcluded, "the mesh went on without this node since the trainer's step %d: join again", step)
	case m.behind && m.heldLast():
		if step != m.d.Step-1 {
			m.emit(Fail{Code: CodeStepMismatch, Msg: fmt.Sprintf("the trainer is at step %d, got %d", m.d.Step-1, step), NextStep: m.d.Step - 1})
			return
		}
		// Decided already, and this node holds its result.
		m.behind, m.d.LastHeld, m.dirty = false, false, true
		m.lastApply = m.now
		m.emit(Apply{Step: step, Value: m.d.Last.Value})
	case step != m.d.Step:
		m.fail(CodeStepMismatch, "the mesh expects step %d, got %d", m.d.Step, step)
	case m.state == StateWaiting:
		m.fail(CodeWaiting, "not in the majority, waiting to rejoin: %s", m.reason)
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
		m.fail(CodeSettingsMismatch, "the ring's members disagree on step %d's settings (%v): every trainer must pass the same buffer length, wire type and reduce op, and every node run with the same all-reduce lanes, chunk size and --trusted-network", m.d.Step, e.Err)
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
		m.fail(CodeExcluded, "the mesh decided step %d without this node's result: join again", step)
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
		m.fail(CodeExcluded, "the mesh went on without this node (%s): join again", why)
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
		m.fail(CodeExcluded, "the mesh is re-formed by the operator: join again")
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
