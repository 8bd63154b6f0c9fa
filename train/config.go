package train

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Config describes the task, the model and the optimizer. Every field enters
// the fingerprint that a checkpoint carries, so two trainers with different
// configs never load each other's state.
type Config struct {
	// Seed fixes the synthetic task (inputs, teacher), the initial
	// parameters and the batch order. Default 1.
	Seed uint64
	// InputDim is the input width; inputs are N(0,1). Default 32.
	InputDim int
	// Hidden lists the student's hidden layer widths (tanh). More or wider
	// layers cost compute per step linearly. Default [128 64]: 13,130
	// parameters, about 1 ms per 16 samples on one core.
	Hidden []int
	// Classes is the number of labels. Default 10.
	Classes int
	// TeacherHidden is the width of the fixed random teacher network whose
	// argmax gives the labels. Default 64.
	TeacherHidden int
	// DatasetSize is how many distinct samples batches draw from; any
	// sample is regenerated from (Seed, index). Default 65536.
	DatasetSize int
	// LR is the SGD learning rate. Default 0.05.
	LR float32
	// Momentum is the SGD momentum in [0, 1). Default 0.9.
	Momentum float32
}

// DefaultConfig returns the defaults documented on Config: the demo size.
func DefaultConfig() Config {
	return Config{
		Seed:          1,
		InputDim:      32,
		Hidden:        []int{128, 64},
		Classes:       10,
		TeacherHidden: 64,
		DatasetSize:   1 << 16,
		LR:            0.05,
		Momentum:      0.9,
	}
}

// LocalConfig is a small model for fast tests (1,140 parameters).
func LocalConfig() Config {
	c := DefaultConfig()
	c.InputDim = 16
	c.Hidden = []int{32, 16}
	c.Classes = 4
	c.TeacherHidden = 16
	c.DatasetSize = 4096
	return c
}

// Limits on Config sizes: a model of these dimensions is never a typo.
const (
	maxDim    = 1 << 14
	maxLayers = 16
)

// Validate checks every field.
func (c Config) Validate() error {
	switch {
	case c.InputDim < 1 || c.InputDim > maxDim:
		return fmt.Errorf("%w: input dim %d not in 1..%d", ErrConfig, c.InputDim, maxDim)
	case len(c.Hidden) > maxLayers:
		return fmt.Errorf("%w: %d hidden layers, at most %d", ErrConfig, len(c.Hidden), maxLayers)
	case c.Classes < 2 || c.Classes > maxDim:
		return fmt.Errorf("%w: classes %d not in 2..%d", ErrConfig, c.Classes, maxDim)
	case c.TeacherHidden < 1 || c.TeacherHidden > maxDim:
		return fmt.Errorf("%w: teacher hidden %d not in 1..%d", ErrConfig, c.TeacherHidden, maxDim)
	case c.DatasetSize < 1:
		return fmt.Errorf("%w: dataset size %d must be positive", ErrConfig, c.DatasetSize)
	case !(c.LR > 0):
		return fmt.Errorf("%w: learning rate %v must be positive", ErrConfig, c.LR)
	case !(c.Momentum >= 0 && c.Momentum < 1):
		return fmt.Errorf("%w: momentum %v not in [0, 1)", ErrConfig, c.Momentum)
	}
	for i, h := range c.Hidden {
		if h < 1 || h > maxDim {
			return fmt.Errorf("%w: hidden layer %d width %d not in 1..%d", ErrConfig, i, h, maxDim)
		}
	}
	if n := c.NumParams(); n > maxParams {
		return fmt.Errorf("%w: %d parameters, at most %d", ErrConfig, n, maxParams)
	}
	return nil
}

// NumParams returns the length of the flat parameter vector.
func (c Config) NumParams() int {
	n, in := 0, c.InputDim
	for _, h := range append(append([]int(nil), c.Hidden...), c.Classes) {
		n += in*h + h
		in = h
	}
	return n
}

// Fingerprint is the hex SHA-256 of a canonical text of every field.
func (c Config) Fingerprint() string {
	sum := sha256.Sum256([]byte(c.canonical()))
	return hex.EncodeToString(sum[:])
}

func (c Config) canonical() string {
	hs := make([]string, len(c.Hidden))
	for i, h := range c.Hidden {
		hs[i] = fmt.Sprint(h)
	}
	return fmt.Sprintf("ringmesh-train/1 seed=%d in=%d hidden=%s classes=%d teacher=%d data=%d lr=%08x mom=%08x",
		c.Seed, c.InputDim, strings.Join(hs, ","), c.Classes, c.TeacherHidden, c.DatasetSize,
		f32bits(c.LR), f32bits(c.Momentum))
}
