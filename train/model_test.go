package train

import (
	"math"
	"testing"
)

// tinyConfig is small enough to check every parameter by finite differences.
func tinyConfig() Config {
	c := DefaultConfig()
	c.Seed = 7
	c.InputDim = 5
	c.Hidden = []int{6, 4}
	c.Classes = 3
	c.TeacherHidden = 4
	c.DatasetSize = 100
	return c
}

func TestGradientCheck(t *testing.T) {
	cfg := tinyConfig()
	m, err := NewModel(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := NewDataset(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Make the biases non-zero so their gradients are exercised away from
	// the symmetric start.
	for i := range m.Params() {
		m.Params()[i] += 0.05 * float32(math.Sin(float64(i)))
	}
	x, labels := ds.Batch([]int{0, 3, 17, 42, 99})
	n := len(labels)
	loss := func() float64 {
		m.Forward(x, n)
		return float64(m.Loss(labels))
	}
	m.Forward(x, n)
	m.Backward(labels)
	analytic := append([]float32(nil), m.Grads()...)

	const eps = 1e-2
	var worst float64
	for i := range m.Params() {
		p := m.Params()
		orig := p[i]
		p[i] = orig + eps
		up := loss()
		p[i] = orig - eps
		down := loss()
		p[i] = orig
		numeric := (up - down) / (2 * eps)
		diff := math.Abs(numeric - float64(analytic[i]))
		worst = max(worst, diff)
		if diff > 1e-3+1e-2*math.Abs(numeric) {
			t.Errorf("param %d: analytic gradient %.6g, numeric %.6g", i, analytic[i], numeric)
		}
	}
	t.Logf("%d parameters, worst |analytic - numeric| = %.2g", len(analytic), worst)
}

func TestLossFalls(t *testing.T) {
	tr, err := New(LocalConfig())
	if err != nil {
		t.Fatal(err)
	}
	before, accBefore := tr.Evaluate(1000)
	var first, last float64
	for step := 0; step < 200; step++ {
		loss, err := tr.TrainStep(32)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case step < 20:
			first += float64(loss) / 20
		case step >= 180:
			last += float64(loss) / 20
		}
	}
	after, accAfter := tr.Evaluate(1000)
	t.Logf("held-out loss %.3f -> %.3f, accuracy %.2f -> %.2f; train loss first 20 steps %.3f, last 20 %.3f",
		before, after, accBefore, accAfter, first, last)
	if after > 0.7*before {
		t.Errorf("held-out loss %.3f after 200 steps, want below 70%% of %.3f", after, before)
	}
	if last > 0.8*first {
		t.Errorf("train loss of the last 20 steps %.3f, want below 80%% of the first 20 (%.3f)", last, first)
	}
	if tr.Step() != 200 {
		t.Errorf("Step() = %d, want 200", tr.Step())
	}
}

func TestEmptyShard(t *testing.T) {
	tr, err := New(LocalConfig())
	if err != nil {
		t.Fatal(err)
	}
	// Leave stale gradients behind, then take a share of nothing.
	tr.LocalGrad(0, 1, 8)
	for rank := 3; rank < 5; rank++ {
		loss, n := tr.LocalGrad(rank, 5, 3)
		if n != 0 || loss != 0 {
			t.Errorf("rank %d of 5 with batch 3: loss %v, %d samples; want 0, 0", rank, loss, n)
		}
		for i, g := range tr.Grads() {
			if g != 0 {
				t.Fatalf("rank %d: grad[%d] = %v, want all zero", rank, i, g)
			}
		}
	}
}

func TestModelLayout(t *testing.T) {
	for _, cfg := range []Config{DefaultConfig(), LocalConfig(), tinyConfig()} {
		m, err := NewModel(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := m.NumParams(), cfg.NumParams(); got != want || len(m.Grads()) != want {
			t.Errorf("NumParams() = %d, len(Grads()) = %d, want %d", got, len(m.Grads()), want)
		}
	}
	if got := DefaultConfig().NumParams(); got != 13130 {
		t.Errorf("DefaultConfig().NumParams() = %d, want 13130 (update the Config docs)", got)
	}
	if got := LocalConfig().NumParams(); got != 1140 {
		t.Errorf("LocalConfig().NumParams() = %d, want 1140 (update the Config docs)", got)
	}
}

func BenchmarkStep(b *testing.B) {
	for _, bs := range []int{16, 64} {
		b.Run("default/batch="+itoa(bs), func(b *testing.B) {
			tr, err := New(DefaultConfig())
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := tr.TrainStep(bs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}
