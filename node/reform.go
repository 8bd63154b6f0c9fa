package node

import (
	"fmt"

	"github.com/ringmesh/ringmesh/checkpoint"
	"github.com/ringmesh/ringmesh/node/localapi"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// reformBase is the checkpoint a mesh re-formed by the operator starts
// from: trainers that join it at its first step load this state.
type reformBase struct {
	step  uint64 // the re-formed mesh's first step is at least this
	known checkpoint.Known
}

// reform is the operator's answer to a majority of the agreed list that is
// gone for good (ringmesh reform): this node leaves its list and, with the
// nodes that are forming, forms a new mesh in a newer epoch, at a step no
// lower than any it has applied or seen, whose state is the newest
// checkpoint this node knows of. A node that trains with a majority of its
// list refuses: nothing is lost there.
func (n *Node) reform() localapi.Response {
	if sn := n.drv.Snapshot(); sn.State == rounds.StateTraining {
		return apiErr(localapi.CodeBadRequest, "this node trains with a majority of its list (epoch %d, step %d): there is nothing to re-form", sn.Epoch, sn.Step)
	}
	k, haveCkpt := n.ckpt.newest()
	var epoch, step uint64
	if err := n.drv.Reform(k.Step, func(e, s uint64) {
		// Before the re-formed mesh can admit a trainer: its join loads
		// this base.
		epoch, step = e, s
		if haveCkpt {
			n.ckpt.base.Store(&reformBase{step: step, known: k})
		} else {
			n.ckpt.base.Store(nil)
		}
	}); err != nil {
		return errorResponse(err)
	}
	what := "no checkpoint is known: each trainer keeps the state it has"
	if haveCkpt {
		what = fmt.Sprintf("trainers that join at step %d load the checkpoint of step %d (%s)", step, k.Step, k.Root)
	}
	n.log.Warn("mesh re-formed by the operator", "after_epoch", epoch, "step", step, "checkpoint_step", k.Step, "have_checkpoint", haveCkpt)
	sn := n.drv.Snapshot()
	resp := localapi.Response{Step: step, NextStep: step, State: sn.State,
		Reason: fmt.Sprintf("re-forming after epoch %d at step %d; %s; the mesh forms with the nodes that are forming (--min-members)", epoch-1, step, what)}
	if haveCkpt {
		info := knownInfo(k)
		resp.Checkpoint = &info
	}
	return resp
}

// newest returns the checkpoint of the highest step that counts in the
// current history (held here, or announced by a live member of the list).
func (c *checkpoints) newest() (checkpoint.Known, bool) {
	var best checkpoint.Known
	ok := false
	for _, k := range c.trusted(c.history()) {
		if !ok || k.Step > best.Step {
			best, ok = k, true
		}
	}
	return best, ok
}
