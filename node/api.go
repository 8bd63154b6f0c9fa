package node

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/node/apiserver"
	"github.com/ringmesh/ringmesh/node/localapi"
	"github.com/ringmesh/ringmesh/node/roundrun"
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
	sn := b.n.drv.Snapshot()
	return apiserver.Membership{Mesh: b.n.cfg.Mesh.Mesh, Self: b.n.host.ID().String(), State: sn.State, Reason: sn.Reason,
		NextStep: sn.Step, Members: idStrings(sn.List)}
}

func (b apiBackend) Status() localapi.Status { return b.n.Status() }

func (b apiBackend) Trained(t localapi.TrainingStatus) { b.n.metrics.trained(t) }

func (b apiBackend) SetLocalRanks(ranks int) { b.n.localRanks.Store(int32(ranks)) }

func (b apiBackend) Leave(reason string) { b.n.drv.Leave(reason) }

func (b apiBackend) Join(ctx context.Context, j apiserver.Join) localapi.Response {
	n := b.n
	if j.Resync {
		n.check.resync()
	}
	a, err := n.drv.Join(ctx, rounds.TrainerJoin{StartStep: j.StartStep, NeedState: j.WantCheckpoint, Resync: j.Resync})
	if err != nil {
		return errorResponse(err)
	}
	resp := localapi.Response{Step: a.Step, NextStep: a.Step, Members: idStrings(a.List), MemberCount: len(a.List),
		Share: shareOf(a.List, a.Shares, n.host.ID()), RunID: runID(n.cfg.Mesh.Mesh, a.Epoch)}
	if a.Formed {
		// A formed list that has decided no step: every member's trainer
		// keeps its own state (not when the trainer rejoined its node's
		// running list).
		resp.Formed = n.drv.Fresh(a)
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

func (b apiBackend) Submit(step uint64, data []float32, opt allreduce.Options, parts []apiserver.Part) (apiserver.Pending, localapi.Response) {
	var ps []roundrun.Part
	for _, p := range parts {
		ps = append(ps, roundrun.Part(p))
	}
	sub, err := b.n.drv.Submit(step, data, opt, ps)
	if err != nil {
		return nil, errorResponse(err)
	}
	return pendingReduce{b.n, sub}, localapi.Response{}
}

// pendingReduce is a submitted all-reduce, as the API server holds it.
type pendingReduce struct {
	n   *Node
	sub *roundrun.Submission
}

func (p pendingReduce) PartReady(i int) error { return p.n.drv.PartReady(p.sub, i) }

func (p pendingReduce) Wait() localapi.Response { return p.n.reduced(p.sub.Wait()) }

// reduced answers an all-reduce with its outcome.
func (n *Node) reduced(res roundrun.Applied, err error) localapi.Response {
	if err != nil {
		return errorResponse(err)
	}
	resp := localapi.Response{Step: res.Step, NextStep: res.Step + 1, Members: idStrings(res.Ring),
		MemberCount: len(res.Ring), TotalWeight: res.Weight, Attempts: res.Attempts, Share: shareOf(res.Next, res.Shares, n.host.ID())}
	for _, id := range res.Next {
		if !slices.Contains(res.Ring, id) {
			resp.Joiners = append(resp.Joiners, id.String())
		}
	}
	resp.SaveCheckpoint = len(resp.Joiners) > 0 && res.Ring[0] == n.host.ID()
	resp.StateCheck = n.check.pending()
	return resp
}

func (b apiBackend) StateHash(step uint64, hash string) localapi.Response {
	if !validStateHash(hash, localapi.MinStateHash, localapi.MaxStateHash) {
		return apiErr(localapi.CodeBadRequest, "state_hash: hash must be %d to %d lowercase hex characters", localapi.MinStateHash, localapi.MaxStateHash)
	}
	n := b.n
	sn := n.drv.Snapshot()
	sc := n.check.report(sn.Epoch, step, hash[:stateHashLen], time.Now(), n.mesh.View(), sn.List)
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

// shareOf is self's part of a batch that list splits by shares.
func shareOf(list []peer.ID, shares []uint32, self peer.ID) *localapi.Share {
	lo, hi, ok := rounds.ShareRange(list, shares, self)
	if !ok {
		return nil
	}
	return &localapi.Share{Lo: lo, Hi: hi, Units: rounds.ShareUnits}
}
