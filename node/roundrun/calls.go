package roundrun

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// The trainer's calls (the node's local API answers them with these) and
// what they return.

// Error is a call that failed for a reason the trainer acts on: one of
// the machine's (rounds.Fail, with its message and the step the trainer
// goes on from), or zero for a failure of the driver's own that no call
// of the trainer fixes (an internal error).
type Error struct {
	Reason   rounds.Reason
	Msg      string
	NextStep uint64
}

func (e *Error) Error() string { return e.Msg }

// ErrStopped: the driver stopped (the node shuts down) before it answered
// the call.
var ErrStopped = errors.New("roundrun: stopped")

// NotAdmittedError: a join's context ended before the mesh admitted this
// node, which was in round state State (for Reason).
type NotAdmittedError struct{ State, Reason string }

func (e *NotAdmittedError) Error() string {
	msg := "not admitted yet: node is " + e.State
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// Applied is what the trainer learns of an applied round.
type Applied struct {
	Step uint64
	// Ring is the round's ring; Next the list of the next step, Shares
	// its split of the next step's batch (aligned with Next; none when
	// the mesh does not split it).
	Ring, Next []peer.ID
	Shares     []uint32
	// Weight is the round's total weight; Attempts the all-reduce
	// attempts it took here.
	Weight   float64
	Attempts int
}

// Part is one range of a submitted buffer, in elements: a step whose data
// comes in parts reduces each in a round of its own, in the order given,
// as soon as the trainer marks it ready.
type Part struct{ Off, N int }

// Submission is the trainer's pending all-reduce call (Submit).
type Submission struct {
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

type submitResult struct {
	res Applied
	err error
}

// newSubmission is a trainer's call for step; without parts src is one
// part, ready at once.
func newSubmission(step uint64, src []float32, opt allreduce.Options, parts []Part) *Submission {
	inParts := len(parts) > 0
	if !inParts {
		parts = []Part{{0, len(src)}}
	}
	sub := &Submission{step: step, src: src, opt: opt, parts: parts, start: time.Now(), reply: make(chan submitResult, 1),
		ready: make([]chan struct{}, len(parts)), left: len(parts)}
	for i := range sub.ready {
		sub.ready[i] = make(chan struct{})
	}
	if !inParts {
		sub.markReady(0)
	}
	return sub
}

// markReady closes part i's gate; it reports whether that made every part
// ready, and an error for a part out of range.
func (s *Submission) markReady(i int) (last bool, err error) {
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

// sized: the trainer's weight is its sample count (a weighted mean).
func (s *Submission) sized() bool { return s.opt.Op == allreduce.WeightedMean && s.opt.Weight > 0 }

// Wait returns the outcome of the submission: the applied round (its
// result is in the submitted buffer) or why there is none. The driver
// answers every submission, also when it stops.
func (s *Submission) Wait() (Applied, error) {
	r := <-s.reply
	return r.res, r.err
}

// Join waits until this node is a training member, admitted for the
// trainer's join j, or ctx ends (a *NotAdmittedError). With NeedState
// (the trainer asked for the state of its entry step), a member whose
// trainer is not at the list's step joins at the next step so that a
// checkpoint is saved for it; with Resync (its state diverged from the
// mesh's) also one that is.
func (d *Driver) Join(ctx context.Context, j rounds.TrainerJoin) (rounds.Admitted, error) {
	w := make(chan rounds.Admitted, 1)
	if !d.call(func() {
		d.joins = append(d.joins, w)
		d.step(j)
	}) {
		return rounds.Admitted{}, ErrStopped
	}
	select {
	case a := <-w:
		return a, nil
	case <-d.exited:
		return rounds.Admitted{}, ErrStopped
	case <-ctx.Done():
		d.call(func() { d.joins = slices.DeleteFunc(d.joins, func(c chan rounds.Admitted) bool { return c == w }) })
		s := d.snap.Load()
		return rounds.Admitted{}, &NotAdmittedError{State: s.State, Reason: s.Reason}
	}
}

// Fresh reports whether the admission a put the trainer into a mesh that
// has decided no step yet: its list was formed at a.Step (a formation
// now, or one this node restarted in before the first decision), so every
// member's trainer starts from the state it brought. a.Formed alone also
// admits a trainer into its node's running list at the trainer's step (it
// joined again, or is one step behind): not a new mesh.
func (d *Driver) Fresh(a rounds.Admitted) bool {
	var fresh bool
	d.call(func() {
		s := d.m.Durable()
		fresh = s.Last == nil && s.Epoch == a.Epoch && s.Step == a.Step
	})
	return fresh
}

// Leave stops offering rounds; the mesh goes on without this node. A
// pending submission is answered (ReasonNotMember, reason).
func (d *Driver) Leave(reason string) {
	d.call(func() {
		d.stopReduce()
		d.answer(nil, &Error{Reason: rounds.ReasonNotMember, Msg: reason})
		d.step(rounds.TrainerLeave{Reason: reason})
	})
}

// Submit submits src for step without waiting for the outcome
// (Submission.Wait has it). The all-reduce leaves its result in src. With
// parts (they tile src), the all-reduce of part i waits until PartReady
// marks it: the trainer may still be computing the later parts.
func (d *Driver) Submit(step uint64, src []float32, opt allreduce.Options, parts []Part) (*Submission, error) {
	inParts := len(parts) > 0
	sub := newSubmission(step, src, opt, parts)
	var busy error
	if !d.call(func() {
		if d.sub != nil {
			busy = &Error{Reason: rounds.ReasonBusy, Msg: fmt.Sprintf("an all-reduce for step %d is already in flight", d.sub.step), NextStep: d.sub.step}
			return
		}
		d.sub = sub
		if !inParts {
			d.measure(sub, sub.start)
		}
		d.step(rounds.Submit{Step: step, Sized: sub.sized(), InParts: inParts})
	}) {
		return nil, ErrStopped
	}
	if busy != nil {
		return nil, busy
	}
	return sub, nil
}

// PartReady marks part i of sub ready for its all-reduce; it fails for a
// part sub does not have. The last part to be marked times the trainer's
// step (its speed).
func (d *Driver) PartReady(sub *Submission, i int) error {
	last, err := sub.markReady(i)
	if err != nil || !last {
		return err
	}
	at := time.Now()
	d.call(func() {
		if d.sub == sub {
			d.measure(sub, at)
			d.step(rounds.PartsReady{Step: sub.step, Sized: sub.sized()})
		}
	})
	return nil
}

// Reform re-forms the mesh on the operator's word (rounds.Reform): this
// node leaves its list to form a new one in a newer epoch, at a step no
// lower than minStep. then runs on the loop with the epoch and step the
// machine goes on with, before any other event: what it records is in
// place before the new mesh can admit anyone. ErrStopped when the driver
// has stopped.
func (d *Driver) Reform(minStep uint64, then func(epoch, step uint64)) error {
	if !d.call(func() {
		d.stopReduce()
		d.step(rounds.Reform{Step: minStep})
		epoch, step, _ := d.m.NextStep()
		then(epoch, step)
	}) {
		return ErrStopped
	}
	return nil
}

// SetLink hands the link prober's new estimate to the machine.
func (d *Driver) SetLink(l rounds.Link) {
	d.call(func() {
		if l != d.link {
			d.link = l
			d.step(rounds.SetLink{Link: l})
		}
	})
}

// Snapshot is what status, hello and membership report of the rounds;
// the loop publishes a new one after every event.
type Snapshot struct {
	// State and Reason are the machine's round state and why.
	State, Reason string
	// Epoch, Step and List: the next step to decide and its agreed list;
	// Shares its split of the step's batch, aligned with List.
	Epoch, Step uint64
	List        []peer.ID
	Shares      []uint32
	// Dropped counts round messages dropped: malformed, over the inbound
	// queue, or not fitting their sender's role.
	Dropped uint64
	// Samples is the local trainer's samples per second; Link the link
	// estimate the machine was last given.
	Samples float64
	Link    rounds.Link
	// WaitingFor: the members whose offer of the submitted step this
	// node still waits for (rounds.Machine.WaitingFor).
	WaitingFor []peer.ID
}

// Snapshot returns the rounds' latest snapshot. Its slices are shared:
// read them only.
func (d *Driver) Snapshot() Snapshot {
	s := *d.snap.Load()
	s.Dropped += d.inDropped.Load() + d.badMessage.Load()
	return s
}

// publishSnapshot stores the machine's state as the latest snapshot (its
// Dropped the machine's count alone), and logs a change of round state.
func (d *Driver) publishSnapshot() {
	st, why := d.m.State()
	epoch, step, list := d.m.NextStep()
	_, shares := d.m.Shares()
	var dropped uint64
	for _, n := range d.m.Dropped {
		dropped += n
	}
	waiting := d.m.WaitingFor()
	old := d.snap.Load()
	if old != nil && old.State == st && old.Reason == why && old.Epoch == epoch && old.Step == step &&
		slices.Equal(old.List, list) && old.Dropped == dropped && slices.Equal(old.Shares, shares) && old.Samples == d.samples && old.Link == d.link &&
		slices.Equal(old.WaitingFor, waiting) {
		return
	}
	if old == nil || old.State != st || old.Reason != why {
		d.log.Info("round state", "state", st, "reason", why, "epoch", epoch, "step", step, "members", len(list))
	}
	d.snap.Store(&Snapshot{State: st, Reason: why, Epoch: epoch, Step: step, List: slices.Clone(list),
		Shares: slices.Clone(shares), Dropped: dropped, Samples: d.samples, Link: d.link, WaitingFor: waiting})
}
