package train

import (
	"fmt"
	"math"
)

// Outer is the outer loop of DiLoCo (Douillard et al. 2023): each member
// takes SyncEvery inner optimizer steps alone from the agreed parameters
// theta_global, the members average their pseudo-gradients
// theta_global - theta_local (weighted by samples), and every member moves
// theta_global by the same outer step: SGD with Nesterov momentum. A
// trainer built with NewDiLoCo carries it; its fields enter the state's
// fingerprint.
type Outer struct {
	// SyncEvery is H, the inner steps between two outer steps (mesh
	// rounds): the all-reduce traffic per inner step is 1/H of the
	// every-step mode's, and the members drift apart for H steps. Positive;
	// the paper uses 500, a slow link a few tens.
	SyncEvery uint64
	// LR is the outer learning rate. Default 0.7 (the paper's).
	LR float32
	// Momentum is the outer Nesterov momentum in [0, 1). Default 0.9.
	Momentum float32
}

// DefaultOuter returns the paper's outer optimizer with H = 10.
func DefaultOuter() Outer { return Outer{SyncEvery: 10, LR: 0.7, Momentum: 0.9} }

// maxSyncEvery bounds Outer.SyncEvery: more inner steps than this between
// two rounds is a typo, not a plan.
const maxSyncEvery = 1 << 20

// Validate checks every field.
func (o Outer) Validate() error {
	switch {
	case o.SyncEvery < 1 || o.SyncEvery > maxSyncEvery:
		return fmt.Errorf("%w: sync every %d not in 1..%d", ErrConfig, o.SyncEvery, maxSyncEvery)
	case !(o.LR > 0) || math.IsInf(float64(o.LR), 0):
		return fmt.Errorf("%w: outer learning rate %v must be positive and finite", ErrConfig, o.LR)
	case !(o.Momentum >= 0 && o.Momentum < 1):
		return fmt.Errorf("%w: outer momentum %v not in [0, 1)", ErrConfig, o.Momentum)
	}
	return nil
}

// DataStep is the global batch number of inner step inner of outer step
// outer: outer*H + inner. Outer step k's inner steps thus take the global
// batches that steps k*H .. k*H+H-1 of the every-step mode take, so both
// modes see the same samples in the same order.
func (o Outer) DataStep(outer uint64, inner int) uint64 {
	return outer*o.SyncEvery + uint64(inner)
}

func (o Outer) canonical() string {
	return fmt.Sprintf("diloco/1 h=%d lr=%08x mom=%08x", o.SyncEvery, f32bits(o.LR), f32bits(o.Momentum))
}

// NewNesterov returns DiLoCo's outer optimizer for n parameters: SGD with
// Nesterov momentum (SGD.Nesterov) and zero momentum.
func NewNesterov(n int, lr, momentum float32) *SGD {
	o := NewSGD(n, lr, momentum)
	o.Nesterov = true
	return o
}
