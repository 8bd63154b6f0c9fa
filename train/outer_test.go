package train

import (
	"errors"
	"slices"
	"testing"
)

// TestNesterovHandComputed checks the outer step against values worked out
// by hand (m = mu*m + g; p -= lr*(g + mu*m)), chosen so that every
// intermediate is exact in float32.
func TestNesterovHandComputed(t *testing.T) {
	o := NewNesterov(2, 0.5, 0.5)
	p := []float32{1, -2}
	steps := []struct {
		g, wantM, wantP []float32
	}{
		// m = 0.5*0 + 1 = 1;  p = 1 - 0.5*(1 + 0.5*1) = 0.25
		// m = 0.5*0 - 4 = -4; p = -2 - 0.5*(-4 + 0.5*-4) = 1
		{[]float32{1, -4}, []float32{1, -4}, []float32{0.25, 1}},
		// m = 0.5*1 + 2 = 2.5; p = 0.25 - 0.5*(2 + 0.5*2.5) = -1.375
		// m = 0.5*-4 + 2 = 0;  p = 1 - 0.5*(2 + 0) = 0
		{[]float32{2, 2}, []float32{2.5, 0}, []float32{-1.375, 0}},
		// m = 0.5*2.5 + 0 = 1.25; p = -1.375 - 0.5*(0 + 0.625) = -1.6875
		// m = 0.5*0 - 1 = -1;     p = 0 - 0.5*(-1 - 0.5) = 0.75
		{[]float32{0, -1}, []float32{1.25, -1}, []float32{-1.6875, 0.75}},
	}
	for i, s := range steps {
		if err := o.Step(p, s.g); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(o.State(), s.wantM) || !slices.Equal(p, s.wantP) {
			t.Errorf("step %d: momentum %v params %v, want %v and %v", i+1, o.State(), p, s.wantM, s.wantP)
		}
	}
}

// TestNesterovPaperValues: with the paper's lr 0.7 and momentum 0.9 the
// float32 step matches the same formula in float64 to float32 rounding.
func TestNesterovPaperValues(t *testing.T) {
	const lr, mu = 0.7, 0.9
	o := NewNesterov(3, lr, mu)
	p := []float32{0.5, -1, 2}
	ref, m := []float64{0.5, -1, 2}, make([]float64, 3)
	for k, g := range [][]float32{{0.1, -0.2, 0.3}, {0.05, 0.1, -0.4}, {-0.3, 0, 0.2}} {
		if err := o.Step(p, g); err != nil {
			t.Fatal(err)
		}
		for i := range ref {
			m[i] = float64(float32(mu))*m[i] + float64(g[i])
			ref[i] -= float64(float32(lr)) * (float64(g[i]) + float64(float32(mu))*m[i])
			if d := float64(p[i]) - ref[i]; d > 1e-6 || d < -1e-6 {
				t.Errorf("step %d param %d: %v, float64 formula %v", k+1, i, p[i], ref[i])
			}
		}
	}
}

func TestNesterovSizeMismatch(t *testing.T) {
	o := NewNesterov(2, 0.7, 0.9)
	if err := o.Step(make([]float32, 2), make([]float32, 3)); !errors.Is(err, ErrSize) {
		t.Errorf("Step with 3 grads for 2 params = %v, want ErrSize", err)
	}
}

func TestOuterValidate(t *testing.T) {
	if err := DefaultOuter().Validate(); err != nil {
		t.Fatalf("DefaultOuter: %v", err)
	}
	for name, mut := range map[string]func(*Outer){
		"h 0":          func(o *Outer) { o.SyncEvery = 0 },
		"h huge":       func(o *Outer) { o.SyncEvery = maxSyncEvery + 1 },
		"lr 0":         func(o *Outer) { o.LR = 0 },
		"momentum one": func(o *Outer) { o.Momentum = 1 },
		"momentum < 0": func(o *Outer) { o.Momentum = -0.1 },
	} {
		o := DefaultOuter()
		mut(&o)
		if err := o.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: Validate() = %v, want ErrConfig", name, err)
		}
	}
}
