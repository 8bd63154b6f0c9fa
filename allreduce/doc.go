// Package allreduce implements the ring all-reduce: reduce-scatter then
// all-gather over a ring of peers handed to it, through a small Transport
// interface. It knows nothing of membership: callers give it the ordered ring
// and a round id.
package allreduce
