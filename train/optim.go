package train

import "fmt"

// SGD is stochastic gradient descent with momentum: v = mu*v + g;
// p = p - lr*v, or with Nesterov p = p - lr*(g + mu*v) (DiLoCo's outer
// step), elementwise in float32. Its state is one flat vector, saved with
// the checkpoint. Every product is rounded to float32 explicitly, so the
// compiler cannot fuse it into an FMA on some architectures and not on
// others: the same (params, state, grad) give the same bytes on every host.
type SGD struct {
	LR       float32
	Momentum float32
	Nesterov bool
	vel      []float32
}

// NewSGD returns an optimizer for n parameters with zero velocity.
func NewSGD(n int, lr, momentum float32) *SGD {
	return &SGD{LR: lr, Momentum: momentum, vel: make([]float32, n)}
}

// State returns the velocity vector (not a copy).
func (o *SGD) State() []float32 { return o.vel }

// Step updates params in place from grads.
func (o *SGD) Step(params, grads []float32) error {
	if len(params) != len(o.vel) || len(grads) != len(o.vel) {
		return fmt.Errorf("%w: sgd step with %d params and %d grads, want %d",
			ErrSize, len(params), len(grads), len(o.vel))
	}
	lr, mu := o.LR, o.Momentum
	for i, g := range grads {
		v := float32(mu*o.vel[i]) + g
		o.vel[i] = v
		if o.Nesterov {
			v = g + float32(mu*v)
		}
		params[i] -= float32(lr * v)
	}
	return nil
}
