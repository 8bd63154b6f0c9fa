package rounds

import (
	"container/heap"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// The simulation runs n machines over a seeded network that delays,
// reorders, duplicates and drops messages, crashes and restarts machines
// (from what they persisted), partitions them (symmetric, one-way, and
// inside a commit's window), and runs trainers that join late, leave,
// stall and hang. The all-reduce is simulated: its result is a function of
// the step and the ring, and it fails when a ring member is down or cut
// off before it completes. After every event the invariants are checked.

var simEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func simConfig(n int) Config {
	return Config{
		MinMembers:     n/2 + 1,
		FormWait:       300 * time.Millisecond,
		FormTimeout:    3 * time.Second, // counted from the last view in which a majority of the list advertised it
		Resend:         100 * time.Millisecond,
		PhaseTimeout:   time.Second,
		RetryBackoff:   20 * time.Millisecond,
		JoinPoll:       150 * time.Millisecond,
		JoinTTL:        time.Second,
		TrainerTimeout: 2 * time.Second,
		OfferWait:      2 * time.Second,
	}
}

type simEvent struct {
	at  time.Time
	seq uint64
	fn  func()
}

type eventQueue []*simEvent

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*simEvent)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// simTrainer is the trainer of one machine.
type simTrainer struct {
	active  bool   // joined (or joining) and computing
	member  bool   // admitted: step is where its state is
	step    uint64 // the step its state is at
	epoch   uint64
	pending bool // a Submit is outstanding
	slow    time.Duration
	hungTo  time.Time // does not submit before this
	gen     uint64    // bumps on every change, to cancel scheduled submits
}

type simNode struct {
	id      ID
	m       *Machine
	up      bool
	disk    Durable
	info    Info
	tr      simTrainer
	lastApp time.Time // last Apply or Admitted
	// history, for the invariants (kept across restarts)
	lastEpoch, lastStep uint64
	runNext             uint64 // next step this trainer run may apply
	runOn               bool
}

type reduceKey struct {
	epoch, step uint64
	attempt     Ballot
	ring        string
}

type simReduce struct {
	ring    []ID
	started map[ID]bool
	first   time.Time
	done    bool
}

type decided struct {
	value Value
	list  []ID
}

// Sim is one seeded schedule.
type Sim struct {
	rng   *rand.Rand
	seed  uint64
	now   time.Time
	q     eventQueue
	seq   uint64
	nodes []*simNode
	// longReduces makes one all-reduce in ten last 1-3x PhaseTimeout,
	// reporting progress as it goes (a large buffer on a slow link).
	longReduces bool
	byID        map[ID]*simNode

	// network faults
	cut      map[[2]ID]bool // cut[{a,b}]: a's messages do not reach b
	dropP    float64
	dupP     float64
	splitAt  bool // split the network at the next commit
	faulty   bool // faults are still being injected
	healedAt time.Time

	reduces map[reduceKey]*simReduce

	// invariants
	decisions map[[2]uint64]decided // (epoch, step) -> value and list
	accepted  map[[2]uint64]map[ID][]Value
	lists     map[[2]uint64][]ID
	applied   map[[2]uint64]int
	progress  map[ID]time.Time // last apply after the heal
	err       error
	events    int
	applies   int
	trace     []string
	traceOn   bool
	traceMsgs bool
	onSend    func(Message) // scripted scenarios: sees every message before the network
	onApply   func(*simNode, uint64)
}

func simID(i int) ID { return ID(fmt.Sprintf("m%d", i)) }

func newSim(seed uint64, n int) *Sim {
	s := &Sim{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), seed: seed, now: simEpoch,
		byID: map[ID]*simNode{}, cut: map[[2]ID]bool{}, reduces: map[reduceKey]*simReduce{},
		decisions: map[[2]uint64]decided{}, accepted: map[[2]uint64]map[ID][]Value{}, lists: map[[2]uint64][]ID{},
		applied: map[[2]uint64]int{}, progress: map[ID]time.Time{}}
	cfg := simConfig(n)
	for i := range n {
		nd := &simNode{id: simID(i), up: true}
		nd.m = New(cfg, nd.id, Durable{})
		nd.m.acceptHook = s.acceptHook(nd.id)
		s.nodes = append(s.nodes, nd)
		s.byID[nd.id] = nd
	}
	return s
}

func (s *Sim) at(d time.Duration, fn func()) {
	s.seq++
	heap.Push(&s.q, &simEvent{at: s.now.Add(d), seq: s.seq, fn: fn})
}

func (s *Sim) dur(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)+1))
}

func (s *Sim) logf(format string, args ...any) {
	if s.traceOn {
		s.trace = append(s.trace, strings.ReplaceAll(fmt.Sprintf("%8.3f ", s.now.Sub(simEpoch).Seconds())+fmt.Sprintf(format, args...), "9J", ""))
	}
}

func (s *Sim) fail(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf("t=%.3fs: "+format, append([]any{s.now.Sub(simEpoch).Seconds()}, args...)...)
	}
}

// reach reports whether a message from a reaches b now.
func (s *Sim) reach(a, b ID) bool {
	return a == b || (s.byID[a].up && s.byID[b].up && !s.cut[[2]ID{a, b}])
}

// step feeds an event to a node's machine and performs the effects.
func (s *Sim) step(nd *simNode, ev Event) {
	if !nd.up || s.err != nil {
		return
	}
	s.events++
	fx := nd.m.Step(s.now, ev)
	for _, e := range fx {
		s.perform(nd, e)
	}

}

func (s *Sim) perform(nd *simNode, e Effect) {
	switch e := e.(type) {
	case Persist:
		s.persist(nd, e.State)
	case Publish:
		nd.info = e.Info
	case Send:
		s.deliver(e.Msg)
	case StartReduce:
		s.startReduce(nd, e)
	case Apply:
		s.apply(nd, e)
	case Admitted:
		s.admitted(nd, e)
	case Fail:
		s.failed(nd, e)
	}
}

func (s *Sim) persist(nd *simNode, d Durable) {
	if d.Epoch < nd.lastEpoch || (d.Epoch == nd.lastEpoch && d.Step < nd.lastStep) {
		s.fail("%s went back from epoch %d step %d to epoch %d step %d", nd.id, nd.lastEpoch, nd.lastStep, d.Epoch, d.Step)
	}
	nd.lastEpoch, nd.lastStep = d.Epoch, d.Step
	nd.disk = d
	nd.disk.List = slices.Clone(d.List)
	k := [2]uint64{d.Epoch, d.Step}
	if d.List != nil {
		if l, ok := s.lists[k]; ok && !slices.Equal(l, d.List) {
			s.fail("%s holds list %v for epoch %d step %d; another holds %v", nd.id, d.List, d.Epoch, d.Step, l)
		}
		s.lists[k] = slices.Clone(d.List)
	}
	if l := d.Last; l != nil {
		s.decided(nd, d.Epoch, l.Step, l.Value)
	}
}

// decided checks that every machine learns the same decision for a step.
func (s *Sim) decided(nd *simNode, epoch, step uint64, v Value) {
	k := [2]uint64{epoch, step}
	if d, ok := s.decisions[k]; ok {
		if !d.value.Equal(v) {
			s.fail("invariant 1: %s decided epoch %d step %d as %v; another decided %v", nd.id, epoch, step, v, d.value)
		}
		return
	}
	s.decisions[k] = decided{value: v, list: s.lists[k]}
	// invariant 4: a strict majority of the step's list accepted it.
	list, ok := s.lists[k]
	if !ok {
		return // a step decided before any machine persisted its list: checked by applies
	}
	n := 0
	for _, id := range list {
		if slices.ContainsFunc(s.accepted[k][id], v.Equal) {
			n++
		}
	}
	if 2*n <= len(list) {
		s.fail("invariant 4: epoch %d step %d decided with %d acceptances of list %v", epoch, step, n, list)
	}
}

func (s *Sim) acceptHook(id ID) func(epoch, step uint64, v Value) {
	return func(epoch, step uint64, v Value) {
		k := [2]uint64{epoch, step}
		if s.accepted[k] == nil {
			s.accepted[k] = map[ID][]Value{}
		}
		s.accepted[k][id] = append(s.accepted[k][id], v)
	}
}

func (s *Sim) deliver(msg Message) {
	if s.onSend != nil {
		s.onSend(msg)
	}
	if msg.Type == MsgCommit && s.splitAt && s.faulty {
		s.splitAt = false
		s.split(msg.From)
	}
	if !s.reach(msg.From, msg.To) || s.rng.Float64() < s.dropP {
		return
	}
	copies := 1
	if s.rng.Float64() < s.dupP {
		copies = 2
	}
	for range copies {
		m := msg
		if m.Value != nil {
			v := *m.Value
			m.Value = &v
		}
		s.at(s.dur(time.Millisecond, 15*time.Millisecond), func() {
			if s.reach(m.From, m.To) {
				if s.traceMsgs {
					s.logf("  %s -> %s %s e%d s%d b%v", m.From, m.To, m.Type, m.Epoch, m.Step, m.Ballot)
				}
				s.step(s.byID[m.To], Recv{Msg: m})
			}
		})
	}
}

// digest is the simulated all-reduce result: the sum of the ring's
// inputs, each a function of its member and the step.
func digest(step uint64, ring []ID) [8]byte {
	var sum uint64
	for _, id := range ring {
		h := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", id, step)))
		sum += binary.BigEndian.Uint64(h[:])
	}
	var out [8]byte
	binary.BigEndian.PutUint64(out[:], sum)
	return out
}

func (s *Sim) startReduce(nd *simNode, e StartReduce) {
	k := reduceKey{e.Epoch, e.Step, e.Attempt, fmt.Sprint(e.Ring)}
	r := s.reduces[k]
	if r == nil {
		r = &simReduce{ring: e.Ring, started: map[ID]bool{}, first: s.now}
		s.reduces[k] = r
		s.at(300*time.Millisecond, func() {
			if len(r.started) < len(r.ring) {
				s.finishReduce(k, "a ring member did not start")
			}
		})
	}
	if r.done {
		s.at(0, func() { s.step(nd, ReduceDone{Step: e.Step, Attempt: e.Attempt, Err: fmt.Errorf("round over")}) })
		return
	}
	r.started[nd.id] = true
	if len(r.started) == len(r.ring) {
		d := s.dur(5*time.Millisecond, 40*time.Millisecond)
		if s.longReduces && s.rng.IntN(10) == 0 {
			// A large buffer on a slow link: longer than the phase
			// timeout, with progress reported as bytes arrive.
			d = s.dur(s.nodes[0].m.cfg.PhaseTimeout, 3*s.nodes[0].m.cfg.PhaseTimeout)
			s.reportProgress(k, e)
		}
		s.at(d, func() { s.finishReduce(k, "") })
	}
}

// reportProgress reports a running all-reduce's progress to its members every
// 100ms, as node does while bytes arrive, until it ends.
func (s *Sim) reportProgress(k reduceKey, e StartReduce) {
	r := s.reduces[k]
	if r.done {
		return
	}
	for _, id := range r.ring {
		if r.started[id] {
			s.step(s.byID[id], ReduceProgress{Step: e.Step, Attempt: e.Attempt})
		}
	}
	s.at(100*time.Millisecond, func() { s.reportProgress(k, e) })
}

func (s *Sim) finishReduce(k reduceKey, why string) {
	r := s.reduces[k]
	if r.done {
		return
	}
	if why == "" {
		for _, a := range r.ring {
			for _, b := range r.ring {
				if !s.reach(a, b) {
					why = fmt.Sprintf("%s cannot reach %s", a, b)
				}
			}
		}
	}
	r.done = true
	for _, id := range r.ring {
		if !r.started[id] {
			continue
		}
		nd := s.byID[id]
		var err error
		if why != "" {
			err = fmt.Errorf("simulated all-reduce failed: %s", why)
		}
		s.step(nd, ReduceDone{Step: k.step, Attempt: k.attempt, Err: err})
	}
}

// crashReduces fails the all-reduces a node takes part in (it went down or
// was cut off).
func (s *Sim) crashReduces(id ID) {
	keys := make([]reduceKey, 0, len(s.reduces))
	for k := range s.reduces {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b reduceKey) int {
		return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
	})
	for _, k := range keys {
		if r := s.reduces[k]; !r.done && slices.Contains(r.ring, id) {
			s.at(s.dur(time.Millisecond, 10*time.Millisecond), func() { s.finishReduce(k, fmt.Sprintf("%s lost", id)) })
		}
	}
}

func (s *Sim) apply(nd *simNode, e Apply) {
	s.applies++
	epoch := nd.m.d.Epoch
	k := [2]uint64{epoch, e.Step}
	s.logf("%s applies e%d s%d ring %v", nd.id, epoch, e.Step, e.Value.Ring)
	s.decided(nd, epoch, e.Step, e.Value)
	if !slices.Contains(e.Value.Ring, nd.id) {
		s.fail("%s applied epoch %d step %d outside its ring %v", nd.id, epoch, e.Step, e.Value.Ring)
	}
	r := s.reduces[reduceKey{epoch, e.Step, e.Value.Attempt, fmt.Sprint(e.Value.Ring)}]
	if r == nil || !r.started[nd.id] {
		s.fail("%s applied epoch %d step %d without taking part in its all-reduce", nd.id, epoch, e.Step)
	}
	_ = digest(e.Step, e.Value.Ring) // the bytes are a function of (step, ring), so equal values mean equal bytes
	if !nd.runOn || e.Step != nd.runNext {
		s.fail("invariant 2: %s applied step %d; its trainer run expects %d (run on %v)", nd.id, e.Step, nd.runNext, nd.runOn)
	}
	nd.runNext = e.Step + 1
	s.applied[k]++
	if s.onApply != nil {
		s.onApply(nd, e.Step)
	}
	tr := &nd.tr
	if !tr.pending || tr.step != e.Step {
		s.fail("%s applied step %d for a trainer at step %d (pending %v)", nd.id, e.Step, tr.step, tr.pending)
	}
	tr.pending = false
	tr.step = e.Step + 1
	nd.lastApp = s.now
	if !s.faulty {
		s.progress[nd.id] = s.now
	}
	s.scheduleSubmit(nd)
}

func (s *Sim) admitted(nd *simNode, e Admitted) {
	s.logf("%s admitted e%d s%d list %v formed %v", nd.id, e.Epoch, e.Step, e.List, e.Formed)
	tr := &nd.tr
	if !tr.active {
		s.fail("%s admitted without a joining trainer", nd.id)
	}
	if e.Formed && tr.step != e.Step {
		s.fail("%s formed at step %d for a trainer at %d", nd.id, e.Step, tr.step)
	}
	// A joiner loads the state of its entry step (a checkpoint).
	tr.member, tr.step, tr.epoch, tr.pending = true, e.Step, e.Epoch, false
	nd.runOn, nd.runNext = true, e.Step
	nd.lastApp = s.now
	if !s.faulty {
		s.progress[nd.id] = s.now
	}
	s.scheduleSubmit(nd)
}

func (s *Sim) failed(nd *simNode, e Fail) {
	s.logf("%s fail %s: %s", nd.id, e.Reason, e.Msg)
	tr := &nd.tr
	tr.pending = false
	switch e.Reason {
	case ReasonStepMismatch:
		// The trainer submits only steps the node answered: a mismatch
		// means the node moved on without telling it (it must say
		// excluded, so the trainer loads the state of its new step).
		s.fail("%s: %s: %s", nd.id, e.Reason, e.Msg)
		return
	case ReasonWaiting:
		// The state is still good: join again at the same step.
	case ReasonBusy:
		s.fail("%s: busy: the trainer submitted twice", nd.id)
		return
	default:
		// excluded, not a member: the state is behind; join again.
	}
	tr.member = false
	nd.runOn = false
	tr.gen++
	gen := tr.gen
	s.at(s.dur(time.Millisecond, 50*time.Millisecond), func() {
		if nd.up && tr.gen == gen && tr.active {
			s.step(nd, TrainerJoin{StartStep: tr.step, NeedState: true})
		}
	})
}

func (s *Sim) scheduleSubmit(nd *simNode) {
	tr := &nd.tr
	tr.gen++
	gen := tr.gen
	d := s.dur(5*time.Millisecond, 40*time.Millisecond) + tr.slow
	if wait := tr.hungTo.Sub(s.now); wait > d {
		d = wait
	}
	s.at(d, func() {
		if !nd.up || tr.gen != gen || !tr.active || !tr.member || tr.pending {
			return
		}
		tr.pending = true
		s.step(nd, Submit{Step: tr.step, Sized: true})
	})
}

// startTrainer starts (or restarts) a node's trainer. Its state is where
// it was (a trainer that reconnects, or reloads its own last checkpoint).
func (s *Sim) startTrainer(nd *simNode) {
	nd.tr = simTrainer{active: true, gen: nd.tr.gen + 1, step: nd.tr.step}
	nd.runOn = false
	s.step(nd, TrainerJoin{StartStep: nd.tr.step, NeedState: true})
}

func (s *Sim) viewTick() {
	for _, nd := range s.nodes {
		if !nd.up {
			continue
		}
		var peers []Peer
		for _, o := range s.nodes {
			if o == nd {
				continue
			}
			live := s.reach(o.id, nd.id)
			p := Peer{ID: o.id, Live: live}
			if live {
				p.Info = o.info
			}
			peers = append(peers, p)
		}
		s.step(nd, ViewChanged{Peers: peers, Settled: true})
	}
	s.at(50*time.Millisecond, s.viewTick)
}

func (s *Sim) tick() {
	for _, nd := range s.nodes {
		s.step(nd, Tick{})
	}
	s.at(20*time.Millisecond, s.tick)
}

func (s *Sim) crash(nd *simNode) {
	if !nd.up {
		return
	}
	s.logf("%s crashes", nd.id)
	nd.up = false
	nd.tr.gen++
	nd.runOn = false
	s.crashReduces(nd.id)
}

func (s *Sim) restart(nd *simNode) {
	if nd.up {
		return
	}
	s.logf("%s restarts at e%d s%d list %v", nd.id, nd.disk.Epoch, nd.disk.Step, nd.disk.List)
	nd.up = true
	nd.m = New(nd.m.cfg, nd.id, nd.disk)
	nd.m.acceptHook = s.acceptHook(nd.id)
	nd.info = Info{}
	s.startTrainer(nd)
}

// split cuts the network into two groups, the first holding first.
func (s *Sim) split(first ID) {
	var a, b []ID
	for _, nd := range s.nodes {
		if nd.id == first || (s.rng.IntN(2) == 0 && nd.id != first) {
			a = append(a, nd.id)
		} else {
			b = append(b, nd.id)
		}
	}
	s.logf("split %v | %v", a, b)
	for _, x := range a {
		for _, y := range b {
			s.cut[[2]ID{x, y}], s.cut[[2]ID{y, x}] = true, true
		}
	}
	for _, x := range a {
		for _, y := range b {
			if s.byID[x].up && s.byID[y].up {
				s.crashReduces(x)
				s.crashReduces(y)
			}
		}
	}
}

func (s *Sim) heal() {
	s.logf("heal")
	s.cut = map[[2]ID]bool{}
}

// fault injects one random fault and schedules its repair.
func (s *Sim) fault() {
	if !s.faulty {
		return
	}
	nd := s.nodes[s.rng.IntN(len(s.nodes))]
	switch k := s.rng.IntN(10); k {
	case 0, 1:
		s.crash(nd)
		s.at(s.dur(50*time.Millisecond, 2*time.Second), func() { s.restart(nd) })
	case 2, 3:
		s.split(nd.id)
		s.at(s.dur(100*time.Millisecond, 3*time.Second), s.heal)
	case 4:
		o := s.nodes[s.rng.IntN(len(s.nodes))]
		s.logf("cut %s -> %s", nd.id, o.id)
		s.cut[[2]ID{nd.id, o.id}] = true
		s.crashReduces(nd.id)
		s.at(s.dur(100*time.Millisecond, 2*time.Second), s.heal)
	case 5:
		s.splitAt = true
		s.at(s.dur(500*time.Millisecond, 3*time.Second), s.heal)
	case 6:
		if nd.tr.active {
			s.logf("%s trainer leaves", nd.id)
			nd.tr.active = false
			nd.tr.gen++
			nd.runOn = false
			s.step(nd, TrainerLeave{Reason: "trainer left"})
			s.at(s.dur(100*time.Millisecond, 2*time.Second), func() {
				if nd.up && !nd.tr.active {
					s.startTrainer(nd)
				}
			})
		}
	case 7:
		nd.tr.slow = s.dur(0, 300*time.Millisecond)
	case 8:
		nd.tr.hungTo = s.now.Add(s.dur(time.Second, 4*time.Second))
	case 9:
		s.dropP = s.rng.Float64() * 0.2
		s.dupP = s.rng.Float64() * 0.2
	}
	s.at(s.dur(20*time.Millisecond, 800*time.Millisecond), s.fault)
}

// stopFaults heals everything: every node up, the network whole, no
// drops, trainers prompt.
func (s *Sim) stopFaults() {
	s.faulty = false
	s.heal()
	s.dropP, s.dupP = 0, 0
	for _, nd := range s.nodes {
		nd.tr.slow, nd.tr.hungTo = 0, time.Time{}
		if !nd.up {
			s.restart(nd)
		} else if !nd.tr.active {
			s.startTrainer(nd)
		} else if nd.tr.member && !nd.tr.pending {
			s.scheduleSubmit(nd)
		}
	}
	s.healedAt = s.now
	s.logf("faults stop")
}

// run plays the schedule: machines start (some late), faults for
// faultFor, then a quiet period in which every machine must apply again.
func (s *Sim) run(faultFor, settle time.Duration) error {
	s.faulty = true
	for i, nd := range s.nodes {
		delay := time.Duration(0)
		if i > 0 && s.rng.IntN(3) == 0 {
			delay = s.dur(0, 2*time.Second)
		}
		s.at(delay, func() { s.startTrainer(nd) })
	}
	s.at(0, s.tick)
	s.at(0, s.viewTick)
	s.at(s.dur(0, 500*time.Millisecond), s.fault)
	s.at(faultFor, s.stopFaults)
	end := simEpoch.Add(faultFor + settle)
	for s.q.Len() > 0 && s.err == nil {
		e := heap.Pop(&s.q).(*simEvent)
		if e.at.After(end) {
			break
		}
		s.now = e.at
		e.fn()
		if !s.faulty && len(s.progress) == len(s.nodes) {
			break // every machine trains again: invariant 5 holds
		}
	}
	if s.err != nil {
		return s.err
	}
	// invariant 5: after the faults stopped, every machine applied a step.
	var stuck []string
	for _, nd := range s.nodes {
		if _, ok := s.progress[nd.id]; !ok {
			st, why := nd.m.State()
			mm := nd.m
			ph := 0
			if mm.prop != nil {
				ph = mm.prop.phase
			}
			stuck = append(stuck, fmt.Sprintf("%s (%s: %s; e%d s%d list %v; trainer %d submitted %v pending %v phase %d offers %v att %v prom %v acc %v)", nd.id, st, why, mm.d.Epoch, mm.d.Step, mm.d.List,
				mm.trainer, mm.submitted, nd.tr.pending, ph, mm.offers, mm.att, mm.d.Promised, mm.d.Accepted))
		}
	}
	if len(stuck) > 0 {
		return fmt.Errorf("invariant 5: within %s of the last heal, no step applied by %s", settle, strings.Join(stuck, ", "))
	}
	return nil
}
