package train

import "fmt"

// Trainer is one data-parallel member: a Model, the Dataset, an SGD
// optimizer and the step counter. A step on a mesh of world members is
//
//	loss, n := t.LocalGrad(rank, world, B) // mean gradient over my share
//	... all-reduce t.Grads() with weighted mean, weight n ...
//	t.Apply(t.Grads())                     // identical update everywhere
//
// and since each member's gradient is the mean over its n samples, the
// weighted mean over members is the mean gradient of the whole global batch:
// every member applies what one worker with batch B would.
//
// A trainer built with NewDiLoCo runs DiLoCo instead: the model's
// parameters are theta_local, which the inner SGD moves alone for H steps
// (InnerStep) from theta_global; then
//
//	pg := t.PseudoGrad()  // theta_global - theta_local
//	... all-reduce pg with weighted mean, weight = samples of the H steps ...
//	t.Apply(pg)           // Nesterov outer step on theta_global
//
// and Step counts outer steps. Not safe for concurrent use.
type Trainer struct {
	cfg   Config
	model *Model
	data  *Dataset
	opt   *SGD
	step  uint64
	outer *outerLoop // nil: every-step data parallelism
}

// outerLoop is a DiLoCo trainer's agreed state: theta_global and the outer
// optimizer. The inner SGD's velocity (Trainer.opt) is this member's own.
type outerLoop struct {
	cfg    Outer
	global []float32
	opt    *SGD
}

// New returns a trainer at step 0 with the initial parameters of cfg.
func New(cfg Config) (*Trainer, error) {
	m, err := NewModel(cfg)
	if err != nil {
		return nil, err
	}
	d, err := NewDataset(cfg)
	if err != nil {
		return nil, err
	}
	return &Trainer{cfg: cfg, model: m, data: d, opt: NewSGD(m.NumParams(), cfg.LR, cfg.Momentum)}, nil
}

// NewDiLoCo returns a DiLoCo trainer at outer step 0: theta_global and
// theta_local are the initial parameters of cfg, the outer momentum zero.
// cfg's LR and Momentum are the inner SGD's.
func NewDiLoCo(cfg Config, outer Outer) (*Trainer, error) {
	if err := outer.Validate(); err != nil {
		return nil, err
	}
	t, err := New(cfg)
	if err != nil {
		return nil, err
	}
	n := t.model.NumParams()
	t.outer = &outerLoop{cfg: outer, global: append(make([]float32, 0, n), t.model.Params()...),
		opt: NewNesterov(n, outer.LR, outer.Momentum)}
	return t, nil
}

// Config returns the trainer's config.
func (t *Trainer) Config() Config { return t.cfg }

// Model returns the model.
func (t *Trainer) Model() *Model { return t.model }

// Data returns the data set.
func (t *Trainer) Data() *Dataset { return t.data }

// Outer returns the outer loop's config, and false for an every-step
// trainer.
func (t *Trainer) Outer() (Outer, bool) {
	if t.outer == nil {
		return Outer{}, false
	}
	return t.outer.cfg, true
}

// Step returns the number of steps applied (outer steps for DiLoCo): the
// next step to run.
func (t *Trainer) Step() uint64 { return t.step }

// Params returns the flat parameter vector (not a copy): the model's,
// theta_local for DiLoCo.
func (t *Trainer) Params() []float32 { return t.model.Params() }

// GlobalParams returns the parameters the members agree on (not a copy):
// theta_global for DiLoCo, else Params. They are what the state saves and
// ParamHash hashes.
func (t *Trainer) GlobalParams() []float32 {
	if t.outer == nil {
		return t.model.Params()
	}
	return t.outer.global
}

// Grads returns the flat gradient vector (not a copy): the buffer to
// all-reduce.
func (t *Trainer) Grads() []float32 { return t.model.Grads() }

// GlobalBatch returns the sample indices of the current step's global
// batch of size b.
func (t *Trainer) GlobalBatch(b int) []int { return t.data.GlobalBatch(t.step, b) }

// LocalGrad sets Grads to the mean gradient over member rank's shard of the
// current step's global batch of size b split among world members, and
// returns the shard's mean loss and its size (the all-reduce weight; 0 with
// a zero gradient when world > b).
func (t *Trainer) LocalGrad(rank, world, b int) (loss float32, samples int) {
	mine := Shard(t.GlobalBatch(b), rank, world)
	return t.model.ComputeGrad(t.data, mine), len(mine)
}

// Apply takes one optimizer step with grad (the averaged gradient; it may
// be Grads() itself) and advances the step counter. For DiLoCo grad is the
// averaged pseudo-gradient: the Nesterov step moves theta_global, and
// theta_local restarts from it (the inner velocity stays).
func (t *Trainer) Apply(grad []float32) error {
	var err error
	if t.outer == nil {
		err = t.opt.Step(t.model.Params(), grad)
	} else if err = t.outer.opt.Step(t.outer.global, grad); err == nil {
		copy(t.model.Params(), t.outer.global)
	}
	if err != nil {
		return fmt.Errorf("apply step %d: %w", t.step, err)
	}
	t.step++
	return nil
}

// TrainStep runs one single-process step with global batch b and returns
// its loss: for DiLoCo one outer step, H inner steps on whole global
// batches (the mean loss of the H) and the outer step.
func (t *Trainer) TrainStep(b int) (float32, error) {
	if t.outer == nil {
		loss, _ := t.LocalGrad(0, 1, b)
		return loss, t.Apply(t.model.Grads())
	}
	var sum float32
	for i := range int(t.outer.cfg.SyncEvery) {
		sum += t.InnerStep(t.InnerBatch(i, b))
	}
	return sum / float32(t.outer.cfg.SyncEvery), t.Apply(t.PseudoGrad())
}

// InnerBatch returns the sample indices of inner step inner's global
// batch of size b in the current outer step (Outer.DataStep). It panics
// for an every-step trainer.
func (t *Trainer) InnerBatch(inner, b int) []int {
	return t.data.GlobalBatch(t.diloco("InnerBatch").cfg.DataStep(t.step, inner), b)
}

// InnerStep takes one inner SGD step on theta_local with the mean gradient
// over the given samples (left in Grads) and returns their mean loss; the
// step counter does not move. No samples: no change. It panics for an
// every-step trainer.
func (t *Trainer) InnerStep(indices []int) float32 {
	t.diloco("InnerStep")
	if len(indices) == 0 {
		return 0
	}
	loss := t.model.ComputeGrad(t.data, indices)
	t.opt.Step(t.model.Params(), t.model.Grads()) // the sizes are the model's own
	return loss
}

// PseudoGrad sets Grads to theta_global - theta_local, the buffer a DiLoCo
// member all-reduces, and returns it. It panics for an every-step trainer.
func (t *Trainer) PseudoGrad() []float32 {
	g, local := t.model.Grads(), t.model.Params()
	for i, v := range t.diloco("PseudoGrad").global {
		g[i] = v - local[i]
	}
	return g
}

// Restart discards a DiLoCo member's local progress: theta_local restarts
// from theta_global and the inner optimizer from zero velocity, as after
// a join. An every-step trainer has no local progress: no change.
func (t *Trainer) Restart() {
	if t.outer == nil {
		return
	}
	copy(t.model.Params(), t.outer.global)
	clear(t.opt.State())
}

func (t *Trainer) diloco(method string) *outerLoop {
	if t.outer == nil {
		panic("train: " + method + " of an every-step trainer (NewDiLoCo builds DiLoCo ones)")
	}
	return t.outer
}

// Evaluate returns the mean loss and accuracy on n held-out samples (the
// indices just past the data set), the same for every member with the same
// parameters. It overwrites the model's last Forward, not Grads.
func (t *Trainer) Evaluate(n int) (loss, accuracy float32) {
	if n <= 0 {
		return 0, 0
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = t.cfg.DatasetSize + i
	}
	x, labels := t.data.Batch(idx)
	logits := t.model.Forward(x, n)
	loss = t.model.Loss(labels)
	c, correct := t.cfg.Classes, 0
	for s := 0; s < n; s++ {
		z, best := logits[s*c:(s+1)*c], 0
		for j, v := range z {
			if v > z[best] {
				best = j
			}
		}
		if best == labels[s] {
			correct++
		}
	}
	return loss, float32(correct) / float32(n)
}
