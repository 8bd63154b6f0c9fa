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
// Checkpoint state (MarshalState/UnmarshalState), version 1, big-endian:
//
//	offset   size  field
//	0        4     magic "RMTS"
//	4        2     version (1)
//	6        2     flags (0; anything else is rejected)
//	8        32    SHA-256 config fingerprint (Config.Fingerprint, raw)
//	40       8     step (steps applied)
//	48       4     P, number of parameters
//	52       4     S, number of optimizer state floats (= P for SGD)
//	56       4P    parameters, IEEE 754 binary32
//	56+4P    4S    optimizer state (SGD velocity), binary32
//	56+4P+4S 4     CRC-32C (Castagnoli) of every byte before it
//
// ParamHash is the hex SHA-256 of the parameters as little-endian binary32
// bytes (numpy '<f4'), for comparing members.
//
// The package has no logger or Metrics: it does no I/O and starts no
// goroutines; callers time and log steps.
package train
