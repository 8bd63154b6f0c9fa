package node

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/localapi"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// reducer is what rounds need of the all-reduce.
type reducer interface {
	AllReduce(ctx context.Context, self peer.ID, r allreduce.Round, src, dst []float32, opt allreduce.Options) (allreduce.Result, error)
}

// roundResult is what the trainer learns of an applied round.
type roundResult struct {
	step     uint64
	ring     []peer.ID
	next     []peer.ID
	weight   float64
	attempts int
	share    *localapi.Share // of the next step's batch
}

// roundError is a round call that failed for a reason the trainer acts
// on: one of the machine's (rounds.Fail, with its message and the step the
// trainer goes on from), or zero for a failure of the driver's own that no
// call of the trainer fixes (node/codes.go maps both to local API codes).
type roundError struct {
	Reason   rounds.Reason
	Msg      string
	NextStep uint64
}

func (e *roundError) Error() string { return e.Msg }

// errStopped: the driver stopped (the node shuts down) before it answered
// the call.
var errStopped = errors.New("node: the round loop stopped")

// notAdmittedError: a join's context ended before the mesh admitted this
// node, which was in round state State (for Reason).
type notAdmittedError struct{ State, Reason string }

func (e *notAdmittedError) Error() string {
	msg := "not admitted yet: node is " + e.State
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// submit is the trainer's pending all-reduce call.
type submit struct {
	step     uint64
	src      []float32
	opt      allreduce.Options
	parts    []Part // src's parts, in the order they are reduced
	attempts int
	weight   float64
	start    time.Time // the trainer's call
	reply    chan submitResult

	// ready[i] is closed once the trainer marked part i ready (at once
	// for a call without parts); left counts the parts not ready yet.
	readyMu sync.Mutex
	ready   []chan struct{}
	left    int
}

// Part is one range of a submitted buffer, in elements: a step whose data
// comes in parts reduces each in a round of its own, in the order given,
// as soon as the trainer marks it ready.
type Part struct{ Off, N int }

// markReady closes part i's gate; it reports whether that made every part
// ready, and an error for a part out of range.
func (s *submit) markReady(i int) (last bool, err error) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	if i < 0 || i >= len(s.ready) {
		return false, fmt.Errorf("part %d: the step has %d parts", i, len(s.ready))
	}
	select {
	case <-s.ready[i]:
		return false, nil // marked before: nothing changes
	default:
	}
	close(s.ready[i])
	s.left--
	return s.left == 0, nil
}

// errPartStalled: the trainer did not mark a part ready in time.
var errPartStalled = errors.New("trainer stalled")

type submitResult struct {
	res roundResult
	err error
}

// reduceDone is an all-reduce's outcome on its way to the loop.
type reduceDone struct {
	ev     rounds.ReduceDone
	weight float64
	// stalled says why the trainer is dropped: it did not mark a part of
	// its buffer ready within TrainerTimeout.
	stalled string
}

// snapshot is what status, hello and membership report; the loop
// publishes a new one after every event.
type snapshot struct {
	state, reason string
	epoch, step   uint64
	list          []peer.ID
	shares        []uint32 // of step's batch, aligned with list
	dropped       uint64
	samples       float64 // the local trainer's samples per second
	link          rounds.Link
	// waitingFor: the members whose offer of the submitted step this
	// node still waits for (rounds.Machine.WaitingFor).
	waitingFor []peer.ID
}

// driver owns the rounds machine. One goroutine (run) feeds it every event
// (messages, views, the trainer's calls, all-reduce outcomes, ticks) and
// performs its effects; nothing else touches the machine.
type driver struct {
	n      *Node
	cfg    Config
	log    *slog.Logger
	m      *rounds.Machine
	store  *stateStore
	result *resultBuf
	boot   string
	start  time.Time

	in     chan rounds.Message
	calls  chan func()
	done   chan reduceDone
	exited chan struct{}

	// Owned by run.
	ctx      context.Context
	sub      *submit
	joins    []chan rounds.Admitted
	reduce   context.CancelFunc
	reduceWG sync.WaitGroup
	// reducing is the running all-reduce's attempt; progress counts the
	// bytes it received (allreduce.Options.Progress) and seen what the
	// last tick reported to the machine.
	reducing rounds.StartReduce
	progress atomic.Int64
	seen     int64
	send     *senders
	// sendMsg sends a round message (d.send.send; tests capture it).
	sendMsg func(rounds.Message)
	// unsaved: a Persist failed, so the machine's state since is not on
	// disk: nothing is sent until a save of its current state succeeds
	// (a promise that leaves must be durable, even one that did not
	// change the state again).
	unsaved bool
	queue   []rounds.Event

	// samples is the local trainer's smoothed samples per second (its
	// weight over the time from the last answer to its next submit);
	// answered is when the last submit was answered.
	samples  float64
	answered time.Time
	link     rounds.Link // the last estimate handed to the machine

	snap       atomic.Pointer[snapshot]
	inDropped  atomic.Uint64
	badMessage atomic.Uint64
}

func machineConfig(c Config) rounds.Config {
	return rounds.Config{
		MinMembers:     c.MinMembers,
		FormWait:       c.FormWait,
		FormTimeout:    c.FormTimeout,
		Resend:         c.Resend,
		PhaseTimeout:   c.CommitTimeout,
		RetryBackoff:   c.RetryBackoff,
		JoinPoll:       c.JoinPoll,
		JoinTTL:        c.JoinRequestTTL,
		TrainerTimeout: c.TrainerTimeout,
		OfferWait:      c.TrainerTimeout,
	}
}

func newDriver(n *Node, store *stateStore, st savedState, result *resultBuf) *driver {
	d := &driver{n: n, cfg: n.cfg, log: n.log, store: store, result: result, boot: bootID(), start: time.Now(),
		in: make(chan rounds.Message, 1024), calls: make(chan func()), done: make(chan reduceDone, 4),
		exited: make(chan struct{})}
	durable := st.Durable
	if durable.Result != nil && (st.Boot == "" || st.Boot != d.boot || int(st.ResultLen) != result.len()) {
		// The result buffer did not survive (a reboot): do not claim it.
		durable.Result = nil
	}
	d.m = rounds.New(machineConfig(n.cfg), n.host.ID(), durable)
	d.publishSnapshot()
	return d
}

// run drives the machine until ctx ends. Every pending trainer call is
// answered before it returns, and no all-reduce is running then.
func (d *driver) run(ctx context.Context) error {
	d.ctx = ctx
	d.send = newSenders(ctx, d)
	d.sendMsg = d.send.send
	defer close(d.exited)
	defer d.send.wait()
	views := d.n.mesh.Watch(ctx)
	tick := time.NewTicker(d.cfg.Tick)
	defer tick.Stop()
	d.step(d.viewEvent(d.n.mesh.View()))
	for {
		select {
		case <-ctx.Done():
			d.stopReduce()
			d.answer(nil, errStopped)
			return nil
		case v, ok := <-views:
			if !ok {
				views = nil
				continue
			}
			d.step(d.viewEvent(v))
		case msg := <-d.in:
			d.step(rounds.Recv{Msg: msg})
		case f := <-d.calls:
			f()
		case r := <-d.done:
			if !d.current(r.ev) {
				// An all-reduce stopped since (its outcome was already
				// given to the machine, or its attempt was replaced).
				continue
			}
			if r.stalled != "" {
				d.stopReduce()
				d.answer(nil, &roundError{Reason: rounds.ReasonExcluded, Msg: r.stalled})
				d.step(rounds.TrainerLeave{Reason: r.stalled})
				continue
			}
			if d.sub != nil && r.ev.Err == nil {
				d.sub.weight = r.weight
			}
			d.step(r.ev)
		case <-tick.C:
			d.step(d.tickEvent())
		}
	}
}

// tickEvent is a Tick, or a ReduceProgress when the running all-reduce
// received bytes since the last tick (the machine bounds a proposal's
// all-reduce phase by its progress).
func (d *driver) tickEvent() rounds.Event {
	if d.reduce != nil {
		if n := d.progress.Load(); n != d.seen {
			d.seen = n
			return rounds.ReduceProgress{Step: d.reducing.Step, Attempt: d.reducing.Attempt}
		}
	}
	return rounds.Tick{}
}

// settleTimeout bounds how long a node that was told peers to join waits
// for any of them before it may form a mesh of its own.
const settleTimeout = 30 * time.Second

func (d *driver) viewEvent(v mesh.View) rounds.ViewChanged {
	peers := viewPeers(v)
	settled := len(d.cfg.Mesh.Join) == 0 || time.Since(d.start) > settleTimeout ||
		slices.ContainsFunc(peers, func(p rounds.Peer) bool { return p.Live })
	return rounds.ViewChanged{Peers: peers, Settled: settled}
}

// call runs f on the loop goroutine and returns once it has run; false
// when the loop has stopped (f did not run).
func (d *driver) call(f func()) bool {
	ran := make(chan struct{})
	select {
	case d.calls <- func() { f(); close(ran) }:
		<-ran
		return true
	case <-d.exited:
		return false
	}
}

// step feeds ev and performs the effects (and those of the events they
// queue) in order.
func (d *driver) step(ev rounds.Event) {
	d.queue = append(d.queue, ev)
	for len(d.queue) > 0 {
		ev := d.queue[0]
		d.queue = d.queue[1:]
		retried := false
		for _, e := range d.m.Step(time.Now(), ev) {
			switch e := e.(type) {
			case rounds.Persist:
				// What follows depends on the state being on disk.
				d.unsaved = !d.persist(e.State)
			case rounds.Send:
				if d.unsaved && !retried {
					retried = true
					d.unsaved = !d.persist(d.m.Durable())
				}
				if !d.unsaved {
					d.sendMsg(e.Msg)
				}
			case rounds.Publish:
				if err := d.n.setInfo(e.Info, d.samples, int(d.n.localRanks.Load())); err != nil {
					d.log.Warn("set payload", "err", err)
				}
			case rounds.StartReduce:
				d.startReduce(e)
			case rounds.Apply:
				d.apply(e)
			case rounds.Admitted:
				d.admitted(e)
			case rounds.Fail:
				d.answer(nil, &roundError{Reason: e.Reason, Msg: e.Msg, NextStep: e.NextStep})
			}
		}
	}
	d.publishSnapshot()
}

// persist saves the machine's durable state s; false (logged) when it
// could not.
func (d *driver) persist(s rounds.Durable) bool {
	if err := d.store.save(savedState{Boot: d.boot, ResultLen: uint64(d.result.len()), Durable: s}); err != nil {
		d.log.Error("persist round state; round messages are held until it succeeds", "err", err)
		return false
	}
	return true
}

func (d *driver) publishSnapshot() {
	st, why := d.m.State()
	epoch, step, list := d.m.NextStep()
	_, shares := d.m.Shares()
	var dropped uint64
	for _, n := range d.m.Dropped {
		dropped += n
	}
	waiting := d.m.WaitingFor()
	old := d.snap.Load()
	if old != nil && old.state == st && old.reason == why && old.epoch == epoch && old.step == step &&
		slices.Equal(old.list, list) && old.dropped == dropped && slices.Equal(old.shares, shares) && old.samples == d.samples && old.link == d.link &&
		slices.Equal(old.waitingFor, waiting) {
		return
	}
	if old == nil || old.state != st || old.reason != why {
		d.log.Info("round state", "state", st, "reason", why, "epoch", epoch, "step", step, "members", len(list))
	}
	d.snap.Store(&snapshot{state: st, reason: why, epoch: epoch, step: step, list: slices.Clone(list),
		shares: slices.Clone(shares), dropped: dropped, samples: d.samples, link: d.link, waitingFor: waiting})
}

// answer replies to the pending submit, with res when err is nil.
func (d *driver) answer(res *roundResult, err error) {
	sub := d.sub
	if sub == nil {
		return
	}
	// The trainer may release its buffer once answered: no all-reduce
	// may read it after that (a refusal can come while one runs). The
	// machine learns that the stopped attempt failed.
	if d.reduce != nil {
		d.stopReduce()
		d.queue = append(d.queue, rounds.ReduceDone{Step: d.reducing.Step, Attempt: d.reducing.Attempt,
			Err: errors.New("node: the all-reduce was stopped: the trainer's call was answered")})
	}
	d.sub = nil
	d.answered = time.Now()
	if err == nil {
		sub.reply <- submitResult{res: *res}
		return
	}
	sub.reply <- submitResult{err: err}
}

// roundName identifies an attempt in the all-reduce header: the mesh, the
// epoch, the agreed list and the ballot (the step and ballot number are
// header fields of their own), so that members that disagree on any of
// them fail on the first bytes.
func roundName(meshName string, e rounds.StartReduce) string {
	h := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], e.Epoch)
	h.Write(b[:])
	for _, id := range e.List {
		h.Write([]byte{byte(len(id))})
		h.Write([]byte(id))
	}
	h.Write([]byte(e.Attempt.By))
	if len(meshName) > 64 {
		meshName = meshName[:64]
	}
	return meshName + "/" + hex.EncodeToString(h.Sum(nil)[:8])
}

func (d *driver) startReduce(e rounds.StartReduce) {
	d.stopReduce()
	sub := d.sub
	fail := func(err error) {
		d.queue = append(d.queue, rounds.ReduceDone{Step: e.Step, Attempt: e.Attempt, Err: err})
	}
	if sub == nil {
		fail(errors.New("node: no buffer submitted"))
		return
	}
	dst, err := d.result.floats(len(sub.src))
	if err != nil {
		fail(err)
		return
	}
	r := allreduce.Round{Mesh: roundName(d.cfg.Mesh.Mesh, e), Step: e.Step, Attempt: uint32(e.Attempt.N), Ring: e.Ring}
	for _, l := range e.Links {
		r.Links = append(r.Links, allreduce.Link{Egress: l.Egress, Ingress: l.Ingress})
	}
	ctx, cancel := context.WithCancel(d.ctx)
	d.reduce, d.reducing = cancel, e
	sub.attempts++
	if sub.attempts > 1 {
		d.log.Info("round attempt", "step", e.Step, "attempt", sub.attempts, "ring", len(e.Ring))
	}
	self := d.n.host.ID()
	d.reduceWG.Add(1)
	go func() {
		defer d.reduceWG.Done()
		res, stalled, err := d.reduceParts(ctx, self, r, sub, dst)
		if err != nil {
			d.n.reportPeer(err)
		}
		ev := reduceDone{ev: rounds.ReduceDone{Step: e.Step, Attempt: e.Attempt, Err: err,
			Settings: errors.Is(err, allreduce.ErrSettingsMismatch)}, weight: res.TotalWeight, stalled: stalled}
		select {
		case d.done <- ev:
		case <-ctx.Done():
		}
	}()
}

// reduceParts all-reduces sub's parts into dst in turn, each in a round of
// its own (Part i of Parts) once the trainer marked it ready. A trainer that
// leaves a part unmarked for TrainerTimeout is reported in stalled.
func (d *driver) reduceParts(ctx context.Context, self peer.ID, r allreduce.Round, sub *submit, dst []float32) (res allreduce.Result, stalled string, err error) {
	r.Parts = uint32(len(sub.parts))
	var timeout <-chan time.Time
	if d.cfg.TrainerTimeout > 0 && len(sub.parts) > 1 {
		// Timed from the submit, not from this attempt: a retry (the
		// neighbours' attempt failed first, waiting for the stalled part)
		// must not restart the clock.
		t := time.NewTimer(max(time.Until(sub.start.Add(d.cfg.TrainerTimeout)), 0))
		defer t.Stop()
		timeout = t.C
	}
	for i, p := range sub.parts {
		select {
		case <-sub.ready[i]: // a part marked ready is never stalled, however late the attempt
		default:
			select {
			case <-sub.ready[i]:
			case <-ctx.Done():
				return res, "", ctx.Err()
			case <-timeout:
				stalled = fmt.Sprintf("the trainer did not mark part %d of step %d ready within %s (--trainer-timeout)", i, sub.step, d.cfg.TrainerTimeout)
				return res, stalled, errPartStalled
			}
		}
		r.Part, r.Offset = uint32(i), uint64(p.Off)
		opt := sub.opt
		opt.Progress = &d.progress
		if res, err = d.n.reducer.AllReduce(ctx, self, r, sub.src[p.Off:p.Off+p.N], dst[p.Off:p.Off+p.N], opt); err != nil {
			return res, "", err
		}
	}
	return res, "", nil
}

// current reports whether ev is the outcome of the running all-reduce.
func (d *driver) current(ev rounds.ReduceDone) bool {
	return d.reduce != nil && ev.Step == d.reducing.Step && ev.Attempt == d.reducing.Attempt
}

// stopReduce cancels the running all-reduce and waits for it.
func (d *driver) stopReduce() {
	if d.reduce != nil {
		d.reduce()
		d.reduce = nil
	}
	d.reduceWG.Wait()
}

func (d *driver) apply(e rounds.Apply) {
	d.stopReduce() // it has ended; this releases its context
	sub := d.sub
	if sub == nil {
		return
	}
	if d.result.len() != len(sub.src) {
		d.answer(nil, &roundError{NextStep: e.Step + 1,
			Msg: fmt.Sprintf("step %d was decided with a result of %d elements; the buffer holds %d: join again", e.Step, d.result.len(), len(sub.src))})
		return
	}
	dst, _ := d.result.floats(len(sub.src))
	copy(sub.src, dst)
	d.n.metrics.roundApplied(max(sub.attempts, 1), sub.start, sub.opt.Weight)
	d.answer(&roundResult{step: e.Step, ring: e.Value.Ring, next: e.Value.Next, weight: sub.weight, attempts: max(sub.attempts, 1),
		share: shareOf(e.Value.Next, e.Value.Shares, d.n.host.ID())}, nil)
}

// shareOf is self's part of a batch that list splits by shares.
func shareOf(list []peer.ID, shares []uint32, self peer.ID) *localapi.Share {
	lo, hi, ok := rounds.ShareRange(list, shares, self)
	if !ok {
		return nil
	}
	return &localapi.Share{Lo: lo, Hi: hi, Units: rounds.ShareUnits}
}

func (d *driver) admitted(e rounds.Admitted) {
	d.log.Info("member", "epoch", e.Epoch, "step", e.Step, "members", len(e.List), "formed", e.Formed)
	for _, w := range d.joins {
		w <- e
	}
	d.joins = nil
}

// join waits until this node is a training member.
// With needState (the trainer asked for the state of its entry step), a
// member whose trainer is not at the list's step joins at the next step so
// that a checkpoint is saved for it; with resync (its state diverged from
// the mesh's) also one that is.
func (n *Node) join(ctx context.Context, start uint64, needState, resync bool) (rounds.Admitted, error) {
	d := n.drv
	w := make(chan rounds.Admitted, 1)
	if !d.call(func() {
		d.joins = append(d.joins, w)
		d.step(rounds.TrainerJoin{StartStep: start, NeedState: needState, Resync: resync})
	}) {
		return rounds.Admitted{}, errStopped
	}
	select {
	case a := <-w:
		return a, nil
	case <-d.exited:
		return rounds.Admitted{}, errStopped
	case <-ctx.Done():
		d.call(func() { d.joins = slices.DeleteFunc(d.joins, func(c chan rounds.Admitted) bool { return c == w }) })
		s := d.snap.Load()
		return rounds.Admitted{}, &notAdmittedError{State: s.state, Reason: s.reason}
	}
}

// leave stops offering rounds; the mesh goes on without this node.
func (n *Node) leave(reason string) {
	d := n.drv
	d.call(func() {
		d.stopReduce()
		d.answer(nil, &roundError{Reason: rounds.ReasonNotMember, Msg: reason})
		d.step(rounds.TrainerLeave{Reason: reason})
	})
}

// submitReduce submits src for step without waiting for the outcome
// (submit.wait has it). With parts (they tile src), the all-reduce of
// part i waits until partReady marks it: the trainer may still be
// computing the later parts.
func (n *Node) submitReduce(step uint64, src []float32, opt allreduce.Options, parts []Part) (*submit, error) {
	d := n.drv
	inParts := len(parts) > 0
	sub := newSubmit(step, src, opt, parts)
	var busy error
	if !d.call(func() {
		if d.sub != nil {
			busy = &roundError{Reason: rounds.ReasonBusy, Msg: fmt.Sprintf("an all-reduce for step %d is already in flight", d.sub.step), NextStep: d.sub.step}
			return
		}
		d.sub = sub
		if !inParts {
			d.measure(sub, sub.start)
		}
		d.step(rounds.Submit{Step: step, Sized: sub.sized(), InParts: inParts})
	}) {
		return nil, errStopped
	}
	if busy != nil {
		return nil, busy
	}
	return sub, nil
}

// newSubmit is a trainer's call for step; without parts src is one part,
// ready at once.
func newSubmit(step uint64, src []float32, opt allreduce.Options, parts []Part) *submit {
	inParts := len(parts) > 0
	if !inParts {
		parts = []Part{{0, len(src)}}
	}
	sub := &submit{step: step, src: src, opt: opt, parts: parts, start: time.Now(), reply: make(chan submitResult, 1),
		ready: make([]chan struct{}, len(parts)), left: len(parts)}
	for i := range sub.ready {
		sub.ready[i] = make(chan struct{})
	}
	if !inParts {
		sub.markReady(0)
	}
	return sub
}

// sized: the trainer's weight is its sample count (a weighted mean).
func (s *submit) sized() bool { return s.opt.Op == allreduce.WeightedMean && s.opt.Weight > 0 }

// wait returns the outcome of the submit (the loop answers every submit,
// also when it stops).
func (s *submit) wait() (roundResult, error) {
	r := <-s.reply
	return r.res, r.err
}

// partReady marks part i of sub ready for its all-reduce. The last part
// to be marked times the trainer's step (its speed).
func (n *Node) partReady(sub *submit, i int) error {
	last, err := sub.markReady(i)
	if err != nil || !last {
		return err
	}
	at := time.Now()
	d := n.drv
	d.call(func() {
		if d.sub == sub {
			d.measure(sub, at)
			d.step(rounds.PartsReady{Step: sub.step, Sized: sub.sized()})
		}
	})
	return nil
}

// setLink hands the link prober's new estimate to the machine.
func (d *driver) setLink(l rounds.Link) {
	d.call(func() {
		if l != d.link {
			d.link = l
			d.step(rounds.SetLink{Link: l})
		}
	})
}

// measure folds a submit's samples (its weight) into the trainer's
// samples per second; at is when its data was complete (the call, or the
// last part marked ready).
func (d *driver) measure(sub *submit, at time.Time) {
	if d.answered.IsZero() || !sub.sized() {
		return
	}
	v := sub.opt.Weight / max(at.Sub(d.answered).Seconds(), 1e-4)
	if d.samples == 0 {
		d.samples = v
	} else {
		d.samples += 0.3 * (v - d.samples)
	}
}

// reportPeer tells the mesh about a peer whose stream failed, so failure
// detection probes it at once.
func (n *Node) reportPeer(err error) {
	var pe *allreduce.PeerError
	if !errors.As(err, &pe) {
		return
	}
	for _, benign := range []error{context.Canceled, allreduce.ErrHeaderMismatch, allreduce.ErrAborted, allreduce.ErrRoundNotStarted, allreduce.ErrUnexpectedStream} {
		if errors.Is(err, benign) {
			return
		}
	}
	n.mesh.Suspect(pe.Peer, err)
}
