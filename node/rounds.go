package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// reducer is what rounds need of the all-reduce.
type reducer interface {
	AllReduce(ctx context.Context, self peer.ID, r allreduce.Round, src, dst []float32, opt allreduce.Options) (allreduce.Result, error)
}

// roundResult is what the trainer learns of an applied round.
type roundResult struct {
	step     uint64
	ring     []member
	next     []member
	weight   float64
	attempts int
}

// roundKey identifies an attempt: the step, the agreed list it came from and
// the ring. Two attempts with equal keys compute the same bytes.
func roundKey(mesh string, step uint64, list, ring []member) (allreduce.Round, [32]byte) {
	lh := listHash(list)
	r := allreduce.Round{Mesh: mesh + "/" + hex.EncodeToString(lh[:8]), Step: step, Ring: ids(ring)}
	mh := r.MembersHash()
	h := sha256.New()
	h.Write([]byte(r.Mesh))
	h.Write(mh[:])
	var key [32]byte
	h.Sum(key[:0])
	return r, key
}

// allReduce runs round step with the trainer's buffer src and, once the round
// commits, writes the result into src. It retries with the surviving ring
// until the round commits, this node falls out of the majority, or ctx ends.
func (n *Node) allReduce(ctx context.Context, step uint64, src []float32, opt allreduce.Options) (roundResult, error) {
	e := n.eng
	e.mu.Lock()
	if err := e.checkRoundLocked(step); err != nil {
		e.mu.Unlock()
		return roundResult{}, err
	}
	e.busy = true
	list := e.list
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.busy = false
		e.cur = nil
		e.mu.Unlock()
	}()

	dst := n.scratch(len(src))
	backoff := n.cfg.RetryBackoff
	for attempts := 1; ; attempts++ {
		v := n.mesh.View()
		if why := staleness(trainingPeers(v), step); why != "" {
			return roundResult{}, n.leftOut(why)
		}
		ring, quorum := liveRing(list, v)
		if !hasMajority(ring, quorum) || !containsID(ring, e.self) {
			return roundResult{}, n.enterWaiting(ring, quorum)
		}
		res, err := n.attempt(ctx, step, list, ring, src, dst, opt)
		if err == nil {
			copy(src, dst)
			res.attempts = attempts
			n.applied(res)
			return res, nil
		}
		var re *roundError
		if errors.As(err, &re) || ctx.Err() != nil {
			return roundResult{}, err
		}
		n.log.Info("round attempt failed", "step", step, "attempt", attempts, "ring", shortIDs(ring), "list", len(list), "err", err)
		select {
		case <-ctx.Done():
			return roundResult{}, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 20*n.cfg.RetryBackoff)
	}
}

func (e *engine) checkRoundLocked(step uint64) error {
	switch e.state {
	case stateTraining:
	case stateWaiting:
		return &roundError{Code: localapi.CodeWaiting, Msg: "not in the majority, waiting to rejoin: " + e.reason, NextStep: e.nextStep}
	default:
		return &roundError{Code: localapi.CodeNotMember, Msg: fmt.Sprintf("node is %s, not a training member: call join first", e.state)}
	}
	if e.busy {
		return &roundError{Code: localapi.CodeBusy, Msg: fmt.Sprintf("an all-reduce for step %d is already in flight", e.nextStep), NextStep: e.nextStep}
	}
	if step != e.nextStep {
		return &roundError{Code: localapi.CodeStepMismatch, Msg: fmt.Sprintf("the mesh expects step %d, got %d", e.nextStep, step), NextStep: e.nextStep}
	}
	return nil
}

// enterWaiting moves to the waiting state (ring is not a majority).
func (n *Node) enterWaiting(ring []member, quorum int) error {
	e := n.eng
	e.mu.Lock()
	defer e.mu.Unlock()
	reason := fmt.Sprintf("not in the majority: %d of %d members of the last agreed list reachable", len(ring), quorum)
	e.setStateLocked(stateWaiting, reason)
	return &roundError{Code: localapi.CodeWaiting, Msg: "not in the majority, waiting to rejoin: " + reason, NextStep: e.nextStep}
}

// applied records a committed round and moves to the next step.
func (n *Node) applied(res roundResult) {
	e := n.eng
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nextStep = res.step + 1
	e.list = res.next
	e.lastApply = time.Now()
	n.metrics.roundApplied(res.attempts)
	if !containsID(res.next, e.self) {
		e.setStateLocked(stateIdle, "left out of the next member list")
		return
	}
	e.publishLocked()
	e.notifyLocked()
}

// attempt tries round step once over ring and returns the committed result.
// An error means nothing was applied.
func (n *Node) attempt(ctx context.Context, step uint64, list, ring []member, src, dst []float32, opt allreduce.Options) (roundResult, error) {
	e := n.eng
	rnd, key := roundKey(n.cfg.Mesh.Mesh, step, list, ring)
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	a := &attempt{step: step, key: key, ring: ring, cancel: cancel, readies: map[peer.ID]bool{}}
	e.mu.Lock()
	e.cur = a
	e.notifyLocked()
	e.mu.Unlock()

	// Cancel the attempt as soon as the view drops a ring member.
	stop := n.watchRing(actx, cancel, list, ring)
	defer stop()

	red, err := n.reducer.AllReduce(actx, e.self, rnd, src, dst, opt)
	e.mu.Lock()
	if err == nil && !a.fenced {
		a.hasResult = true
	}
	have := a.hasResult
	e.notifyLocked()
	e.mu.Unlock()
	if !have {
		n.reportPeer(err)
		// Without the result this node cannot have let anyone commit; but a
		// member may have committed without us only if we are out of its
		// ring, which recovery finds out.
		res, rerr := n.recover(ctx, a, list, src, dst, red)
		if errors.Is(err, allreduce.ErrSettingsMismatch) {
			// No retry can agree: tell the trainer instead of retrying.
			return roundResult{}, &roundError{Code: localapi.CodeSettingsMismatch, NextStep: step,
				Msg: fmt.Sprintf("the ring's members disagree on step %d's settings (%v): every trainer must pass the same buffer length, wire type and reduce op, and every node run with the same --allreduce-lanes and --allreduce-chunk", step, err)}
		}
		return res, rerr
	}
	res := roundResult{step: step, ring: ring, weight: red.TotalWeight}
	leader := ring[0].ID
	if leader == e.self {
		next, ok := n.lead(actx, a)
		if ok {
			res.next = next
			return res, nil
		}
	} else if next, ok := n.follow(actx, a, leader); ok {
		res.next = next
		return res, nil
	}
	return n.recover(ctx, a, list, src, dst, red)
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

// watchRing cancels the attempt when a ring member leaves the live ring.
func (n *Node) watchRing(ctx context.Context, cancel context.CancelFunc, list, ring []member) (stop func()) {
	done := make(chan struct{})
	views := n.mesh.Watch(ctx)
	n.goRound(func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case v, ok := <-views:
				if !ok {
					return
				}
				if live, _ := liveRing(list, v); !sameIDs(live, ring) {
					cancel()
					return
				}
			}
		}
	})
	return func() { cancel(); <-done }
}

func sameIDs(a, b []member) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// lead collects a ready from every ring member, then commits: it records
// the round as applied and tells the members. It returns false when the
// attempt must be resolved by recovery.
func (n *Node) lead(ctx context.Context, a *attempt) ([]member, bool) {
	e := n.eng
	e.mu.Lock()
	a.readies[e.self] = true
	e.mu.Unlock()
	var next []member
	e.await(ctx, n.cfg.CommitTimeout, func() bool {
		if a.queried || a.aborted {
			return true
		}
		if len(a.readies) == len(a.ring) {
			next = n.nextList(a.ring)
			e.last = &commitRecord{step: a.step, key: a.key, ring: a.ring, next: next}
			return true
		}
		return false
	})
	if next == nil {
		return nil, false
	}
	n.broadcast(a.ring, &msg{Type: msgCommit, Step: a.step, Ring: a.key, Peers: next})
	return next, true
}

// nextList is the agreed list for the step after a round over ring: the ring
// plus the joiners that asked recently and are alive. Call with mu held.
func (n *Node) nextList(ring []member) []member {
	e := n.eng
	next := append([]member(nil), ring...)
	v := n.mesh.View()
	for id, jr := range e.joiners {
		if time.Since(jr.at) > n.cfg.JoinRequestTTL || containsID(next, id) {
			continue
		}
		if _, p, ok := peerPayload(v, id); ok && p.Boot == jr.boot && p.State == stateJoining {
			next = append(next, member{ID: id, Inc: jr.boot})
		}
	}
	sortMembers(next)
	return next
}

// follow reports ready to the leader and waits for its commit.
func (n *Node) follow(ctx context.Context, a *attempt, leader peer.ID) ([]member, bool) {
	e := n.eng
	n.goRound(func() {
		if err := n.send(ctx, leader, &msg{Type: msgReady, Step: a.step, Ring: a.key}); err != nil && ctx.Err() == nil {
			n.mesh.Suspect(leader, err)
		}
	})
	var next []member
	e.await(ctx, n.cfg.CommitTimeout, func() bool {
		if a.queried || a.aborted {
			return true
		}
		if a.commit != nil {
			next = a.commit
			e.last = &commitRecord{step: a.step, key: a.key, ring: a.ring, next: next}
			return true
		}
		return false
	})
	return next, next != nil
}

// await calls check with mu held now and after every change of the engine,
// until check returns true, ctx ends or d passes.
func (e *engine) await(ctx context.Context, d time.Duration, check func() bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		e.mu.Lock()
		done := check()
		ch := e.changed
		e.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-ch:
		}
	}
}

func shortIDs(ms []member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = fmt.Sprintf("%s@%d", short(m.ID), m.Inc)
	}
	return out
}
