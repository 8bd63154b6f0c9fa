package node

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/node/apiserver"
	"github.com/ringmesh/ringmesh/node/localapi"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// apiBackend is the node as its local API (node/apiserver) sees it: the
// server checks calls and keeps the connections' state, the node answers.
type apiBackend struct{ n *Node }

var _ apiserver.Backend = apiBackend{}

func apiErr(code, format string, args ...any) localapi.Response {
	return localapi.Response{Code: code, Error: fmt.Sprintf(format, args...)}
}

func (b apiBackend) Membership() apiserver.Membership {
	sn := b.n.drv.snap.Load()
	return apiserver.Membership{Mesh: b.n.cfg.Mesh.Mesh, Self: b.n.host.ID().String(), State: sn.state, Reason: sn.reason,
		NextStep: sn.step, Members: idStrings(sn.list)}
}

func (b apiBackend) Status() localapi.Status { return b.n.Status() }

func (b apiBackend) SetLocalRanks(ranks int) { b.n.localRanks.Store(int32(ranks)) }

func (b apiBackend) Leave(reason string) { b.n.leave(reason) }

func (b apiBackend) Join(ctx context.Context, j apiserver.Join) localapi.Response {
	n := b.n
	if j.Resync {
		n.check.resync()
	}
	a, err := n.join(ctx, j.StartStep, j.WantCheckpoint, j.Resync)
	if err != nil {
		return errorResponse(err)
	}
	resp := localapi.Response{Step: a.Step, NextStep: a.Step, Members: idStrings(a.List), MemberCount: len(a.List),
		Share: shareOf(a.List, a.Shares, n.host.ID()), RunID: runID(n.cfg.Mesh.Mesh, a.Epoch)}
	if a.Formed {
		resp.Formed = n.newMesh(a)
	}
	if j.WantCheckpoint {
		start := j.StartStep
		if a.Formed {
			start = a.Step // the trainer's own state is the entry step's
		}
		hist := history{list: a.List, step: a.Step, epoch: a.Epoch, run: runID(n.cfg.Mesh.Mesh, a.Epoch)}
		cr := n.ckpt.joinState(ctx, a.Step, start, hist, j.Dest)
		if cr.Code != "" {
			return cr
		}
		resp.Checkpoint, resp.Fetch = cr.Checkpoint, cr.Fetch
	}
	return resp
}

// newMesh reports whether the trainer admitted with a keeps its own state
// in a mesh that has decided no step yet: its list was formed at a.Step (a
// formation now, or one this node restarted in before the first decision),
// so every member's trainer starts from the state it brought. a.Formed
// alone also admits a trainer into its node's running list at the trainer's
// step (it joined again, or is one step behind): not a new mesh.
func (n *Node) newMesh(a rounds.Admitted) bool {
	var fresh bool
	n.drv.call(func() {
		d := n.drv.m.Durable()
		fresh = d.Last == nil && d.Epoch == a.Epoch && d.Step == a.Step
	})
	return fresh
}

func (b apiBackend) Submit(step uint64, data []float32, opt allreduce.Options, parts []apiserver.Part) (apiserver.Pending, localapi.Response) {
	var ps []Part
	for _, p := range parts {
		ps = append(ps, Part(p))
	}
	sub, err := b.n.submitReduce(step, data, opt, ps)
	if err != nil {
		return nil, errorResponse(err)
	}
	return pendingReduce{b.n, sub}, localapi.Response{}
}

// pendingReduce is a submitted all-reduce, as the API server holds it.
type pendingReduce struct {
	n   *Node
	sub *submit
}

func (p pendingReduce) PartReady(i int) error { return p.n.partReady(p.sub, i) }

func (p pendingReduce) Wait() localapi.Response { return p.n.reduced(p.sub.wait()) }

// reduced answers an all-reduce with its outcome.
func (n *Node) reduced(res roundResult, err error) localapi.Response {
	if err != nil {
		return errorResponse(err)
	}
	resp := localapi.Response{Step: res.step, NextStep: res.step + 1, Members: idStrings(res.ring),
		MemberCount: len(res.ring), TotalWeight: res.weight, Attempts: res.attempts, Share: res.share}
	for _, id := range res.next {
		if !slices.Contains(res.ring, id) {
			resp.Joiners = append(resp.Joiners, id.String())
		}
	}
	resp.SaveCheckpoint = len(resp.Joiners) > 0 && res.ring[0] == n.host.ID()
	resp.StateCheck = n.check.pending()
	return resp
}

func (b apiBackend) StateHash(step uint64, hash string) localapi.Response {
	if !validStateHash(hash, localapi.MinStateHash, localapi.MaxStateHash) {
		return apiErr(localapi.CodeBadRequest, "state_hash: hash must be %d to %d lowercase hex characters", localapi.MinStateHash, localapi.MaxStateHash)
	}
	n := b.n
	sn := n.drv.snap.Load()
	sc := n.check.report(sn.epoch, step, hash[:stateHashLen], time.Now(), n.mesh.View(), sn.list)
	return localapi.Response{Step: step, StateCheck: sc}
}

func (b apiBackend) CheckpointSave(ctx context.Context, path string, step uint64) localapi.Response {
	return b.n.ckpt.save(ctx, path, step)
}

func (b apiBackend) CheckpointList(all bool) localapi.Response { return b.n.ckpt.list(all) }

func (b apiBackend) CheckpointFetch(ctx context.Context, f apiserver.Fetch) localapi.Response {
	return b.n.ckpt.fetch(ctx, f)
}

func (b apiBackend) Reform() localapi.Response { return b.n.reform() }
