package roundrun

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/node/rounds"
)

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

func (d *Driver) startReduce(e rounds.StartReduce) {
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
	r := allreduce.Round{Mesh: roundName(d.cfg.Mesh, e), Step: e.Step, Attempt: uint32(e.Attempt.N), Ring: e.Ring}
	for _, l := range e.Links {
		r.Links = append(r.Links, allreduce.Link{Egress: l.Egress, Ingress: l.Ingress})
	}
	ctx, cancel := context.WithCancel(d.ctx)
	d.reduce, d.reducing = cancel, e
	sub.attempts++
	if sub.attempts > 1 {
		d.log.Info("round attempt", "step", e.Step, "attempt", sub.attempts, "ring", len(e.Ring))
	}
	self := d.cfg.Self
	d.reduceWG.Add(1)
	go func() {
		defer d.reduceWG.Done()
		res, stalled, err := d.reduceParts(ctx, self, r, sub, dst)
		if err != nil {
			d.reportPeer(err)
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
func (d *Driver) reduceParts(ctx context.Context, self peer.ID, r allreduce.Round, sub *Submission, dst []float32) (res allreduce.Result, stalled string, err error) {
	r.Parts = uint32(len(sub.parts))
	var timeout <-chan time.Time
	trainerTimeout := d.cfg.Machine.TrainerTimeout
	if trainerTimeout > 0 && len(sub.parts) > 1 {
		// Timed from the submit, not from this attempt: a retry (the
		// neighbours' attempt failed first, waiting for the stalled part)
		// must not restart the clock.
		t := time.NewTimer(max(time.Until(sub.start.Add(trainerTimeout)), 0))
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
				stalled = fmt.Sprintf("the trainer did not mark part %d of step %d ready within %s (--trainer-timeout)", i, sub.step, trainerTimeout)
				return res, stalled, errPartStalled
			}
		}
		r.Part, r.Offset = uint32(i), uint64(p.Off)
		opt := sub.opt
		opt.Progress = &d.progress
		if res, err = d.reducer.AllReduce(ctx, self, r, sub.src[p.Off:p.Off+p.N], dst[p.Off:p.Off+p.N], opt); err != nil {
			return res, "", err
		}
	}
	return res, "", nil
}

// current reports whether ev is the outcome of the running all-reduce.
func (d *Driver) current(ev rounds.ReduceDone) bool {
	return d.reduce != nil && ev.Step == d.reducing.Step && ev.Attempt == d.reducing.Attempt
}

// stopReduce cancels the running all-reduce and waits for it.
func (d *Driver) stopReduce() {
	if d.reduce != nil {
		d.reduce()
		d.reduce = nil
	}
	d.reduceWG.Wait()
}

func (d *Driver) apply(e rounds.Apply) {
	d.stopReduce() // it has ended; this releases its context
	sub := d.sub
	if sub == nil {
		return
	}
	if d.result.len() != len(sub.src) {
		d.answer(nil, &Error{NextStep: e.Step + 1,
			Msg: fmt.Sprintf("step %d was decided with a result of %d elements; the buffer holds %d: join again", e.Step, d.result.len(), len(sub.src))})
		return
	}
	dst, _ := d.result.floats(len(sub.src))
	copy(sub.src, dst)
	d.metrics.RoundApplied(max(sub.attempts, 1), sub.start, sub.opt.Weight)
	d.answer(&Applied{Step: e.Step, Ring: e.Value.Ring, Next: e.Value.Next, Shares: e.Value.Shares, Weight: sub.weight,
		Attempts: max(sub.attempts, 1)}, nil)
}

// reportPeer tells the mesh about a peer whose stream failed, so failure
// detection probes it at once.
func (d *Driver) reportPeer(err error) {
	var pe *allreduce.PeerError
	if !errors.As(err, &pe) {
		return
	}
	for _, benign := range []error{context.Canceled, allreduce.ErrHeaderMismatch, allreduce.ErrAborted, allreduce.ErrRoundNotStarted, allreduce.ErrUnexpectedStream} {
		if errors.Is(err, benign) {
			return
		}
	}
	d.mesh.Suspect(pe.Peer, err)
}
