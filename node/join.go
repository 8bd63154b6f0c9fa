package node

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// join waits until this node is a training member: it forms a new mesh with
// the other forming nodes when no mesh is training, or asks the training
// mesh to admit it. It returns the entry step and the agreed list.
func (n *Node) join(ctx context.Context, startStep uint64) (uint64, []member, error) {
	e := n.eng
	e.mu.Lock()
	if e.state == stateIdle {
		e.startStep = startStep
		e.setStateLocked(stateForming, "")
	}
	e.mu.Unlock()
	views := n.mesh.Watch(ctx)
	for {
		e.mu.Lock()
		if e.state == stateTraining {
			step, list := e.nextStep, e.list
			e.lastApply = time.Now()
			e.mu.Unlock()
			return step, list, nil
		}
		e.mu.Unlock()
		if err := e.wait(ctx, views, time.Second); err != nil {
			e.mu.Lock()
			st, why := e.state, e.reason
			e.mu.Unlock()
			return 0, nil, &roundError{Code: localapi.CodeTimeout, Msg: fmt.Sprintf("not admitted yet: node is %s %s", st, why)}
		}
	}
}

// leave stops offering rounds; the mesh goes on without this node.
func (n *Node) leave(reason string) {
	e := n.eng
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = nil
	e.setStateLocked(stateIdle, reason)
}

// stateLoop moves the node between forming, joining, waiting and training as
// the view changes, and excludes a trainer that stopped calling.
func (n *Node) stateLoop(ctx context.Context) error {
	views := n.mesh.Watch(ctx)
	tick := time.NewTicker(n.cfg.JoinPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-views:
			if !ok {
				return nil
			}
		case <-tick.C:
		}
		n.step(ctx, n.mesh.View())
	}
}

func (n *Node) step(ctx context.Context, v mesh.View) {
	e := n.eng
	e.mu.Lock()
	defer e.mu.Unlock()
	training := trainingPeers(v)
	switch e.state {
	case stateForming:
		for _, p := range training {
			// A forming peer that saw the same set formed first: follow it.
			if p.pl.List == e.formHash && e.formSet != nil {
				n.formedLocked(e.formSet, e.formStart)
				return
			}
		}
		if len(training) > 0 {
			e.setStateLocked(stateJoining, "")
			return
		}
		n.formLocked(v)
	case stateJoining:
		if len(training) == 0 {
			e.setStateLocked(stateForming, "")
			return
		}
		n.askToJoinLocked(ctx, training)
	case stateWaiting:
		for _, p := range training {
			if p.pl.Step > e.nextStep || p.pl.List != shortHash(listHash(e.list)) {
				e.list = nil
				e.setStateLocked(stateJoining, "the majority went on; rejoining")
				return
			}
		}
		if ring, quorum := liveRing(e.list, v); hasMajority(ring, quorum) && sameEpoch(ring, v, e.nextStep, e.list) {
			e.setStateLocked(stateTraining, "")
		}
	case stateTraining:
		if why := staleness(training, e.nextStep); why != "" && !e.busy {
			e.list = nil
			e.setStateLocked(stateJoining, why+"; rejoining")
			return
		}
		if !e.busy && n.cfg.TrainerTimeout > 0 && !e.lastApply.IsZero() && time.Since(e.lastApply) > n.cfg.TrainerTimeout {
			e.list = nil
			e.setStateLocked(stateIdle, fmt.Sprintf("excluded: the trainer did not submit step %d within %s", e.nextStep, n.cfg.TrainerTimeout))
			return
		}
		for id, jr := range e.joiners {
			if time.Since(jr.at) > n.cfg.JoinRequestTTL {
				delete(e.joiners, id)
			}
		}
	}
}

type peerInfo struct {
	id peer.ID
	m  mesh.Member
	pl payload
}

// trainingPeers lists the alive peers that advertise training.
func trainingPeers(v mesh.View) []peerInfo {
	var out []peerInfo
	for _, m := range v.Members {
		if m.ID == v.Self || (m.State != mesh.Alive && m.State != mesh.Suspect) {
			continue
		}
		if p, ok := decodePayload(m.Payload); ok && p.State == stateTraining {
			out = append(out, peerInfo{m.ID, m, p})
		}
	}
	return out
}

// staleness says why this node, at step next, must have been left behind:
// a training peer is two or more steps ahead (a member of its ring would be
// at most one step behind it). Empty when it is not.
func staleness(training []peerInfo, next uint64) string {
	for _, p := range training {
		if p.pl.Step >= next+2 {
			return fmt.Sprintf("member %s is at step %d, this node at %d", short(p.id), p.pl.Step, next)
		}
	}
	return ""
}

// sameEpoch reports whether every member of ring but self advertises the
// same step and agreed list as this node, so that a waiting node resumes
// only with members that were left at the same place (not with members
// that went on while it was cut off and whose new heartbeats have not all
// arrived).
func sameEpoch(ring []member, v mesh.View, step uint64, list []member) bool {
	h := shortHash(listHash(list))
	for _, m := range ring {
		if m.ID == v.Self {
			continue
		}
		_, p, ok := peerPayload(v, m.ID)
		if !ok || p.Step != step || p.List != h || (p.State != stateTraining && p.State != stateWaiting) {
			return false
		}
	}
	return true
}

// formLocked forms a new mesh once at least MinMembers forming nodes see the
// same forming set: the agreed list is that set and the first step the
// largest start step among them.
func (n *Node) formLocked(v mesh.View) {
	e := n.eng
	set := []member{{ID: e.self, Inc: e.boot}}
	start := e.startStep
	var peers []payload
	for _, m := range v.Members {
		if m.ID == v.Self || m.State != mesh.Alive {
			continue
		}
		if p, ok := decodePayload(m.Payload); ok && p.State == stateForming {
			set = append(set, member{ID: m.ID, Inc: p.Boot})
			peers = append(peers, p)
			start = max(start, p.Step)
		}
	}
	sortMembers(set)
	h := shortHash(listHash(set))
	if h != e.formHash {
		e.formHash, e.formSet, e.formStart = h, set, start
		e.publishLocked()
	}
	if len(set) < n.cfg.MinMembers {
		e.reason = fmt.Sprintf("waiting for %d members to form a mesh, %d present", n.cfg.MinMembers, len(set))
		return
	}
	for _, p := range peers {
		if p.Form != h {
			e.reason = "waiting for the forming members to agree"
			return
		}
	}

	n.formedLocked(set, start)
}

func (n *Node) formedLocked(set []member, start uint64) {
	e := n.eng
	e.list = set
	e.nextStep = start
	e.lastApply = time.Now()
	n.log.Info("formed mesh", "members", len(set), "step", start)
	e.setStateLocked(stateTraining, "")
}

// askToJoinLocked sends a join request to every training peer; a reply that
// admits this node makes it a member from the announced step.
func (n *Node) askToJoinLocked(ctx context.Context, training []peerInfo) {
	e := n.eng
	if time.Since(e.lastAsk) < n.cfg.JoinPoll {
		return
	}
	e.lastAsk = time.Now()
	boot := e.boot
	for _, p := range training {
		n.goRound(func() {
			r, err := n.request(ctx, p.id, &msg{Type: msgJoinReq, Step: boot})
			if err != nil || r.Type != msgJoinResp || r.Flags&flagApplied == 0 {
				return
			}
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.state != stateJoining || !containsMember(r.Peers, e.self, e.boot) {
				return
			}
			e.list = r.Peers
			e.nextStep = r.Step
			e.lastApply = time.Now()
			n.log.Info("admitted", "step", r.Step, "members", len(r.Peers), "by", p.id)
			e.setStateLocked(stateTraining, "")
		})
	}
}
