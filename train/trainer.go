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
// every member applies what one worker with batch B would. Not safe for
// concurrent use.
type Trainer struct {
	cfg   Config
	model *Model
	data  *Dataset
	opt   *SGD
	step  uint64
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

// Config returns the trainer's config.
func (t *Trainer) Config() Config { return t.cfg }

// Model returns the model.
func (t *Trainer) Model() *Model { return t.model }

// Data returns the data set.
func (t *Trainer) Data() *Dataset { return t.data }

// Step returns the number of steps applied: the next step to run.
func (t *Trainer) Step() uint64 { return t.step }

// Params returns the flat parameter vector (not a copy).
func (t *Trainer) Params() []float32 { return t.model.Params() }

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
// be Grads() itself) and advances the step counter.
func (t *Trainer) Apply(grad []float32) error {
	if err := t.opt.Step(t.model.Params(), grad); err != nil {
		return fmt.Errorf("apply step %d: %w", t.step, err)
	}
	t.step++
	return nil
}

// TrainStep runs one single-process step with global batch b and returns
// its loss.
func (t *Trainer) TrainStep(b int) (float32, error) {
	loss, _ := t.LocalGrad(0, 1, b)
	return loss, t.Apply(t.model.Grads())
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
