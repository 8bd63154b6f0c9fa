// Package meshtrain runs a train.Trainer as a member of a ringmesh mesh. It
// owns the trainer's side of the local trainer API loop: dial the node,
// join (loading the checkpoint the node hands over), and per step compute
// the gradient of this member's shard of the global batch, all-reduce it
// through the node with weighted mean (weight = samples), apply the result,
// and hand checkpoints to the node every CheckpointEvery steps and whenever
// the node asks for one (joiners are coming).
//
// It is a subpackage so that train stays pure (no I/O, no node imports):
// train knows models and data, meshtrain knows the node's local API.
//
// Shares: each step's global batch is split by the shares the mesh agreed
// with the previous step (the join and all-reduce responses' Share), which
// follow the members' measured speeds, so a fast member computes more of
// the batch; the result does not depend on the split (weighted mean by
// samples). The member list of the step being run (for the rank StepInfo
// reports) is the ring of the last all-reduce response (Response.Members)
// plus the joiners it announced (Response.Joiners), ordered as the node
// orders lists (by raw peer ID bytes); after a join it is the join
// response's Members. From a node that sends no share, members split by
// rank. When a member dies mid-round the survivors finish the round with
// the gradients they computed, so that step averages over the samples of
// the surviving members only (the response's TotalWeight says how many);
// the next step's shares split the whole batch again.
//
// The buffer all-reduced is the flat gradient followed by one float: the
// member's mean loss over its shard. With weighted mean the last float
// becomes the mean loss over the whole global batch, the same on every
// member, which is what StepInfo.Loss reports.
//
// DiLoCo (Config.SyncEvery = H > 0): a mesh step is an outer step. The
// member takes H inner SGD steps alone from theta_global, inner step i on
// its part of global batch Outer.DataStep(step, i) = step*H + i (the part
// the step's agreed share names, the same for the H batches), so the data
// order is fixed by (outer step, inner step, share). The buffer is then the
// pseudo-gradient theta_global - theta_local, all-reduced with weighted
// mean, weight = the member's samples of the H steps; every member applies
// the same Nesterov outer step to theta_global (bit-identical everywhere:
// the all-reduce result is) and restarts theta_local from it. A step that
// is not applied leaves theta_global as it was; a join (and so every
// rejoin after a failed round) discards the member's local progress and
// restarts its inner optimizer from zero (train.Trainer.Restart).
// Checkpoints hold theta_global, the outer momentum and the outer step.
//
// Synced: a trainer whose state step differs from the mesh's step after a
// join (the mesh went on and no checkpoint for the entry step came with the
// join) keeps training on the mesh's data order but is marked unsynced: its
// parameters differ from the others' and it never saves a checkpoint.
package meshtrain
