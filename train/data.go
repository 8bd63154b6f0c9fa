package train

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Random streams, mixed with Config.Seed, so that the teacher, the initial
// parameters, the samples and the batch order never share numbers.
const (
	streamTeacher uint64 = 0x7465616368657200 // "teacher"
	streamInit    uint64 = 0x696e697400000000 // "init"
	streamSample  uint64 = 0x73616d706c650000 // "sample"
	streamBatch   uint64 = 0x6261746368000000 // "batch"
)

// newRand returns a generator for (seed, stream, index).
func newRand(seed, stream, index uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed^stream, index*0x9e3779b97f4a7c15+stream))
}

// Dataset is the synthetic task: inputs x ~ N(0,1)^InputDim, labels the
// argmax of a fixed random teacher MLP (InputDim -> TeacherHidden tanh ->
// Classes). Sample i is regenerated from (Seed, i) on demand; nothing is
// stored but the teacher. Safe for concurrent use.
type Dataset struct {
	cfg Config
	w1  []float32 // TeacherHidden x InputDim
	w2  []float32 // Classes x TeacherHidden
}

// NewDataset builds the task of a valid cfg.
func NewDataset(cfg Config) (*Dataset, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := newRand(cfg.Seed, streamTeacher, 0)
	d := &Dataset{
		cfg: cfg,
		w1:  make([]float32, cfg.TeacherHidden*cfg.InputDim),
		w2:  make([]float32, cfg.Classes*cfg.TeacherHidden),
	}
	// Scaled so the teacher's hidden units are neither saturated nor
	// linear and its classes are roughly balanced.
	s1 := 2 / math.Sqrt(float64(cfg.InputDim))
	for i := range d.w1 {
		d.w1[i] = float32(r.NormFloat64() * s1)
	}
	s2 := 1 / math.Sqrt(float64(cfg.TeacherHidden))
	for i := range d.w2 {
		d.w2[i] = float32(r.NormFloat64() * s2)
	}
	return d, nil
}

// Len is Config.DatasetSize.
func (d *Dataset) Len() int { return d.cfg.DatasetSize }

// Sample writes sample idx's input into x (len InputDim) and returns its
// label. Any non-negative idx is valid; Evaluate uses indices past Len as a
// held-out set.
func (d *Dataset) Sample(idx int, x []float32) int {
	if idx < 0 || len(x) != d.cfg.InputDim {
		panic(fmt.Sprintf("train: Sample(%d) into %d floats, want idx >= 0 and %d", idx, len(x), d.cfg.InputDim))
	}
	r := newRand(d.cfg.Seed, streamSample, uint64(idx))
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return d.label(x)
}

func (d *Dataset) label(x []float32) int {
	in, th := d.cfg.InputDim, d.cfg.TeacherHidden
	h := make([]float32, th)
	for j := range h {
		h[j] = float32(math.Tanh(float64(dot(d.w1[j*in:(j+1)*in], x))))
	}
	best, bestV := 0, float32(math.Inf(-1))
	for c := 0; c < d.cfg.Classes; c++ {
		if v := dot(d.w2[c*th:(c+1)*th], h); v > bestV {
			best, bestV = c, v
		}
	}
	return best
}

// Batch returns the inputs (len(indices) x InputDim, row-major) and labels
// of the given samples.
func (d *Dataset) Batch(indices []int) (x []float32, labels []int) {
	in := d.cfg.InputDim
	x = make([]float32, len(indices)*in)
	labels = make([]int, len(indices))
	for k, idx := range indices {
		labels[k] = d.Sample(idx, x[k*in:(k+1)*in])
	}
	return x, labels
}

// GlobalBatch returns the b sample indices of global batch step: drawn
// uniformly from [0, Len) by a generator seeded with (Seed, step), so every
// member computes the same list with no communication.
func (d *Dataset) GlobalBatch(step uint64, b int) []int {
	if b < 0 {
		panic(fmt.Sprintf("train: GlobalBatch size %d", b))
	}
	r := newRand(d.cfg.Seed, streamBatch, step)
	out := make([]int, b)
	for i := range out {
		out[i] = r.IntN(d.cfg.DatasetSize)
	}
	return out
}

// Shard returns member rank's contiguous share of indices when world
// members split them, as numpy.array_split does: the first len%world ranks
// get one sample more than the others, so ranks >= len(indices) get none
// when world > len(indices). The shards of ranks 0..world-1, concatenated,
// are indices. It panics when rank is not in [0, world).
func Shard(indices []int, rank, world int) []int {
	lo, hi := ShardBounds(len(indices), rank, world)
	return indices[lo:hi:hi]
}

// ShardBounds returns the bounds [lo, hi) of member rank's Shard of n
// samples.
func ShardBounds(n, rank, world int) (lo, hi int) {
	if world < 1 || rank < 0 || rank >= world {
		panic(fmt.Sprintf("train: Shard rank %d of world %d", rank, world))
	}
	base, extra := n/world, n%world
	lo = rank*base + min(rank, extra)
	hi = lo + base
	if rank < extra {
		hi++
	}
	return lo, hi
}

// dot is the float32 dot product, summed left to right.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s float32
	for i, v := range a {
		s += v * b[i]
	}
	return s
}
