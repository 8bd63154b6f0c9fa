package train

import (
	"fmt"
	"math"
)

// Model is an MLP, InputDim -> Hidden... (tanh) -> Classes (softmax
// cross-entropy), whose parameters and gradients are each one flat float32
// vector so that a node can all-reduce them as one buffer. Layer l stores its
// weights (out x in, row-major) and then its biases. Not safe for concurrent
// use.
type Model struct {
	cfg    Config
	dims   []int // InputDim, Hidden..., Classes
	wOff   []int // offset of layer l's weights in params
	bOff   []int // offset of layer l's biases
	params []float32
	grads  []float32

	// The last Forward: n samples, acts[0] its input, acts[l+1] layer l's
	// output (tanh applied except on the logits), probs the softmax.
	n     int
	acts  [][]float32
	probs []float32
	delta [2][]float32 // backward scratch
}

// NewModel returns a model of a valid cfg with weights ~ N(0, 1/fan_in)
// drawn from cfg.Seed and zero biases.
func NewModel(cfg Config) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Model{cfg: cfg, dims: append(append([]int{cfg.InputDim}, cfg.Hidden...), cfg.Classes)}
	off := 0
	for l := 0; l+1 < len(m.dims); l++ {
		m.wOff = append(m.wOff, off)
		off += m.dims[l] * m.dims[l+1]
		m.bOff = append(m.bOff, off)
		off += m.dims[l+1]
	}
	m.params = make([]float32, off)
	m.grads = make([]float32, off)
	m.acts = make([][]float32, len(m.dims))
	r := newRand(cfg.Seed, streamInit, 0)
	for l := 0; l+1 < len(m.dims); l++ {
		s := 1 / math.Sqrt(float64(m.dims[l]))
		w := m.weights(m.params, l)
		for i := range w {
			w[i] = float32(r.NormFloat64() * s)
		}
	}
	return m, nil
}

// Params returns the flat parameter vector (not a copy).
func (m *Model) Params() []float32 { return m.params }

// Grads returns the flat gradient vector (not a copy), filled by Backward.
func (m *Model) Grads() []float32 { return m.grads }

// NumParams is len(Params()).
func (m *Model) NumParams() int { return len(m.params) }

func (m *Model) layers() int { return len(m.dims) - 1 }

func (m *Model) weights(v []float32, l int) []float32 {
	return v[m.wOff[l]:m.bOff[l]]
}

func (m *Model) biases(v []float32, l int) []float32 {
	return v[m.bOff[l] : m.bOff[l]+m.dims[l+1]]
}

// Forward runs n samples (x is n x InputDim, row-major) and returns the
// logits (n x Classes), valid until the next Forward. x must not change
// before Backward.
func (m *Model) Forward(x []float32, n int) []float32 {
	if n < 0 || len(x) != n*m.dims[0] {
		panic(fmt.Sprintf("train: Forward of %d floats as %d samples of %d", len(x), n, m.dims[0]))
	}
	m.n = n
	m.acts[0] = x
	for l := 0; l < m.layers(); l++ {
		in, out := m.dims[l], m.dims[l+1]
		m.acts[l+1] = grow(m.acts[l+1], n*out)
		a, y := m.acts[l], m.acts[l+1]
		w, b := m.weights(m.params, l), m.biases(m.params, l)
		last := l+1 == m.layers()
		for s := 0; s < n; s++ {
			xs := a[s*in : (s+1)*in]
			for j := 0; j < out; j++ {
				v := b[j] + dot(w[j*in:(j+1)*in], xs)
				if !last {
					v = float32(math.Tanh(float64(v)))
				}
				y[s*out+j] = v
			}
		}
	}
	return m.acts[m.layers()]
}

// Loss returns the mean softmax cross-entropy of the last Forward against
// labels (0 for an empty batch).
func (m *Model) Loss(labels []int) float32 {
	m.checkLabels(labels)
	c := m.cfg.Classes
	logits := m.acts[m.layers()]
	m.probs = grow(m.probs, m.n*c)
	var total float64
	for s := 0; s < m.n; s++ {
		z := logits[s*c : (s+1)*c]
		mx := float64(z[0])
		for _, v := range z {
			mx = max(mx, float64(v))
		}
		var sum float64
		for _, v := range z {
			sum += math.Exp(float64(v) - mx)
		}
		lse := mx + math.Log(sum)
		for j, v := range z {
			m.probs[s*c+j] = float32(math.Exp(float64(v) - lse))
		}
		total += lse - float64(z[labels[s]])
	}
	if m.n == 0 {
		return 0
	}
	return float32(total / float64(m.n))
}

func (m *Model) checkLabels(labels []int) {
	if len(labels) != m.n {
		panic(fmt.Sprintf("train: %d labels for a batch of %d", len(labels), m.n))
	}
	for _, y := range labels {
		if y < 0 || y >= m.cfg.Classes {
			panic(fmt.Sprintf("train: label %d not in 0..%d", y, m.cfg.Classes-1))
		}
	}
}

// Backward sets Grads to the gradient of the mean loss of the last Forward
// (all zeros for an empty batch) and returns that loss, as Loss would.
func (m *Model) Backward(labels []int) float32 {
	loss := m.Loss(labels)
	clear(m.grads)
	n, c := m.n, m.cfg.Classes
	if n == 0 {
		return 0
	}
	d := grow(m.delta[0], n*c)
	inv := 1 / float32(n)
	for s := 0; s < n; s++ {
		for j := 0; j < c; j++ {
			d[s*c+j] = m.probs[s*c+j] * inv
		}
		d[s*c+labels[s]] -= inv
	}
	m.delta[0] = d
	for l := m.layers() - 1; l >= 0; l-- {
		m.backLayer(l, n)
	}
	return loss
}

// backLayer accumulates layer l's gradients from m.delta[0] (the loss
// gradient at its output) and leaves the gradient at its input, through
// the previous layer's tanh, in m.delta[0].
func (m *Model) backLayer(l, n int) {
	in, out := m.dims[l], m.dims[l+1]
	d, a := m.delta[0], m.acts[l]
	gw, gb := m.weights(m.grads, l), m.biases(m.grads, l)
	for j := 0; j < out; j++ {
		row := gw[j*in : (j+1)*in]
		for s := 0; s < n; s++ {
			g := d[s*out+j]
			gb[j] += g
			axpy(row, g, a[s*in:(s+1)*in])
		}
	}
	if l == 0 {
		return
	}
	w := m.weights(m.params, l)
	din := grow(m.delta[1], n*in)
	clear(din)
	for s := 0; s < n; s++ {
		ds := din[s*in : (s+1)*in]
		for j := 0; j < out; j++ {
			axpy(ds, d[s*out+j], w[j*in:(j+1)*in])
		}
		for i, v := range a[s*in : (s+1)*in] {
			ds[i] *= 1 - v*v
		}
	}
	m.delta[0], m.delta[1] = din, d
}

// ComputeGrad sets Grads to the mean gradient over the given samples of ds
// and returns their mean loss. With no samples the gradient is zero and the
// loss 0: such a member all-reduces with weight 0.
func (m *Model) ComputeGrad(ds *Dataset, indices []int) float32 {
	if len(indices) == 0 {
		clear(m.grads)
		m.n = 0
		return 0
	}
	x, labels := ds.Batch(indices)
	m.Forward(x, len(indices))
	return m.Backward(labels)
}

// axpy does y += a*x.
func axpy(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}

// grow returns s resized to n, reusing its array when large enough.
func grow(s []float32, n int) []float32 {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]float32, n)
}
