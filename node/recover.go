package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/node/localapi"
)

var errAborted = errors.New("node: attempt aborted")

// recover resolves an attempt whose commit did not arrive. This node holds
// the result of a.key when it gets here with hasResult; otherwise no member
// can have committed a.key (the leader needs our ready), so the attempt is
// simply aborted. With the result, it asks every live member what it knows:
//   - one of them applied a.key: apply the same bytes with its next list;
//   - one applied the step with another ring: this node was left out: rejoin;
//   - every live member holds the result of a.key: commit it (next = a.ring);
//   - one lacks it (and is thereby fenced: it will never report ready): abort.
func (n *Node) recover(ctx context.Context, a *attempt, list []member, src, dst []float32, red allreduce.Result) (roundResult, error) {
	e := n.eng
	e.mu.Lock()
	have := a.hasResult
	e.mu.Unlock()
	if !have {
		n.broadcast(a.ring, &msg{Type: msgAbort, Step: a.step, Ring: a.key})
		return roundResult{}, errAborted
	}
	deadline := time.Now().Add(n.cfg.CommitTimeout)
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return roundResult{}, err
		}
		ring, quorum := liveRing(list, n.mesh.View())
		if !hasMajority(ring, quorum) {
			return roundResult{}, n.enterWaiting(ring, quorum)
		}
		replies, unreachable := n.queryAll(ctx, ring, a)
		res := roundResult{step: a.step, ring: a.ring, weight: red.TotalWeight}
		allHave := unreachable == 0
		for from, r := range replies {
			switch {
			case r.Flags&flagApplied != 0 && r.Step > a.step+1:
				return roundResult{}, n.leftOut(fmt.Sprintf("member %s is already at step %d", short(from), r.Step))
			case r.Flags&flagApplied != 0 && r.Ring == a.key:
				res.next = r.Peers
				n.recordCommit(a, r.Peers)
				return res, nil
			case r.Flags&flagApplied != 0:
				return roundResult{}, n.leftOut(fmt.Sprintf("member %s applied step %d with another ring", short(from), a.step))
			case r.Flags&flagHasResult == 0:
				allHave = false
			}
		}
		if allHave {
			res.next = a.ring
			n.recordCommit(a, a.ring)
			return res, nil
		}
		if unreachable == 0 {
			n.broadcast(a.ring, &msg{Type: msgAbort, Step: a.step, Ring: a.key})
			return roundResult{}, errAborted
		}
		time.Sleep(n.cfg.RetryBackoff)
	}
	n.broadcast(a.ring, &msg{Type: msgAbort, Step: a.step, Ring: a.key})
	return roundResult{}, fmt.Errorf("node: recovery of step %d timed out", a.step)
}

func (n *Node) recordCommit(a *attempt, next []member) {
	e := n.eng
	e.mu.Lock()
	e.last = &commitRecord{step: a.step, key: a.key, ring: a.ring, next: next}
	e.mu.Unlock()
}

// leftOut moves a node that the mesh went on without to joining.
func (n *Node) leftOut(why string) error {
	e := n.eng
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = nil
	e.setStateLocked(stateJoining, "the mesh went on without this node: "+why)
	return &roundError{Code: localapi.CodeExcluded, Msg: "the mesh went on without this node (" + why + "): join again", NextStep: e.nextStep}
}

// queryAll asks every member of ring but self for its status of a.
func (n *Node) queryAll(ctx context.Context, ring []member, a *attempt) (map[peer.ID]*msg, int) {
	type reply struct {
		from peer.ID
		m    *msg
		err  error
	}
	ch := make(chan reply, len(ring))
	asked := 0
	for _, m := range ring {
		if m.ID == n.eng.self {
			continue
		}
		asked++
		n.goRound(func() {
			r, err := n.request(ctx, m.ID, &msg{Type: msgStatusReq, Step: a.step, Ring: a.key})
			ch <- reply{m.ID, r, err}
		})
	}
	out := make(map[peer.ID]*msg, asked)
	bad := 0
	for range asked {
		r := <-ch
		if r.err != nil || r.m.Type != msgStatusResp {
			bad++
			n.mesh.Suspect(r.from, r.err)
			continue
		}
		out[r.from] = r.m
	}
	return out, bad
}

func short(p peer.ID) string {
	s := p.String()
	if len(s) > 12 {
		return s[len(s)-12:]
	}
	return s
}
