// Package train is a small pure-Go trainer used by `ringmesh demo` and the
// tests: an MLP on a deterministic synthetic task, with the data-parallel
// helpers a mesh member needs. It owns the model, the data, the optimizer
// and the trainer's checkpoint bytes; it knows nothing of nodes or networks.
//
// Task: inputs x ~ N(0,1)^InputDim, labels the argmax of a fixed random
// teacher MLP; sample i is regenerated from (Seed, i), so nothing is stored or
// downloaded. Model: InputDim -> Hidden... (tanh) -> Classes, softmax
// cross-entropy, float32, with parameters and gradients each one flat
// []float32 (layer by layer: weights out x in row-major, then biases) that a
// node all-reduces as one buffer. Optimizer: SGD with momentum, its state one
// flat vector, float32 products rounded explicitly so identical inputs give
// identical bytes on every host.
//
// Data parallelism: every member computes the same GlobalBatch(step, B) from
// the seed, takes Shard(indices, rank, world) by its rank in the agreed
// member list, and sets its gradient to the MEAN over its shard. The node
// all-reduces with weighted mean, weight = shard size (0 for an empty shard),
// which equals the mean gradient over the whole global batch; every member
// then applies the same bytes with Apply. TestDataParallelEquivalence checks
// this against one worker with the full batch.
//
// DiLoCo (NewDiLoCo, Outer): each member takes H = Outer.SyncEvery inner
// SGD steps alone on theta_local, inner step i of outer step k on its
// part of global batch Outer.DataStep(k, i) = k*H + i (the batches the
// every-step mode takes at steps k*H .. k*H+H-1); then the members
// all-reduce the pseudo-gradient theta_global - theta_local with weighted
// mean, weight = the samples of the H steps, and every member applies the
// same Nesterov step (NewNesterov: SGD with Nesterov on) to theta_global, in float32, and restarts
// theta_local from it. theta_global and the outer momentum are agreed
// state, bit-identical on every member; the inner velocity is each
// member's own (it starts from zero on a join: Restart).
// TestDiLoCoOneInnerStepIsDataParallel checks that with H = 1, outer lr 1
// and no outer momentum it is the every-step mode.
//
// Checkpoint state (MarshalState/UnmarshalState), version 1, big-endian:
//
//	offset   size  field
//	0        4     magic "RMTS"
//	4        2     version (1)
//	6        2     flags: bit 0 DiLoCo; other bits reserved (rejected)
//	8        32    SHA-256 config fingerprint (Trainer.Fingerprint, raw)
//	40       8     step (steps applied; outer steps for DiLoCo)
//	48       4     P, number of parameters
//	52       4     S, number of optimizer state floats (= P)
//	56       4P    parameters, IEEE 754 binary32 (DiLoCo: theta_global)
//	56+4P    4S    optimizer state, binary32 (SGD velocity; DiLoCo: the
//	               outer Nesterov momentum)
//	56+4P+4S 4     CRC-32C (Castagnoli) of every byte before it
//
// A DiLoCo state keeps the layout and sets flag bit 0; its fingerprint
// covers the Outer config too, so a trainer of the other mode, or another
// H or outer optimizer, rejects it (ErrFingerprint), and a reader of the
// every-step states alone rejects the flag. theta_local and the inner
// velocity are not saved: a loaded DiLoCo trainer restarts from
// theta_global with zero inner velocity.
//
// ParamHash is the hex SHA-256 of the agreed parameters (theta_global for
// DiLoCo) as little-endian binary32 bytes (numpy '<f4'), for comparing
// members.
//
// The package has no logger or Metrics: it does no I/O and starts no
// goroutines; callers time and log steps.
package train
