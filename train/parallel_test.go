package train

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

func TestShard(t *testing.T) {
	for n := 0; n <= 10; n++ {
		indices := make([]int, n)
		for i := range indices {
			indices[i] = 100 + i
		}
		for world := 1; world <= 12; world++ {
			var all []int
			lo, hi := n, 0
			for rank := 0; rank < world; rank++ {
				s := Shard(indices, rank, world)
				want := n / world
				if rank < n%world {
					want++
				}
				if len(s) != want {
					t.Errorf("n=%d world=%d rank=%d: %d samples, want %d", n, world, rank, len(s), want)
				}
				all = append(all, s...)
				lo, hi = min(lo, len(s)), max(hi, len(s))
			}
			if !slices.Equal(all, indices) {
				t.Errorf("n=%d world=%d: shards concatenate to %v, want %v", n, world, all, indices)
			}
			if hi-lo > 1 {
				t.Errorf("n=%d world=%d: shard sizes from %d to %d, want within one", n, world, lo, hi)
			}
		}
	}
	// Appending to a shard must not overwrite the next member's samples.
	indices := []int{1, 2, 3, 4}
	_ = append(Shard(indices, 0, 2), 99)
	if indices[2] != 3 {
		t.Errorf("append to shard 0 changed indices to %v", indices)
	}
}

func TestGlobalBatch(t *testing.T) {
	ds, err := NewDataset(LocalConfig())
	if err != nil {
		t.Fatal(err)
	}
	a, b := ds.GlobalBatch(5, 64), ds.GlobalBatch(5, 64)
	if !slices.Equal(a, b) {
		t.Error("GlobalBatch(5, 64) differs between calls")
	}
	if slices.Equal(a, ds.GlobalBatch(6, 64)) {
		t.Error("GlobalBatch of steps 5 and 6 are equal")
	}
	for _, i := range a {
		if i < 0 || i >= ds.Len() {
			t.Fatalf("index %d outside [0, %d)", i, ds.Len())
		}
	}
	x1, x2 := make([]float32, LocalConfig().InputDim), make([]float32, LocalConfig().InputDim)
	if ds.Sample(17, x1) != ds.Sample(17, x2) || !slices.Equal(x1, x2) {
		t.Error("sample 17 differs between calls")
	}
}

// TestDataParallelEquivalence is the in-process proof of data parallelism:
// K members that each take their shard of every global batch, average their
// mean gradients weighted by shard size (in float64, as the all-reduce
// would) and apply the average end with the parameters of one worker that
// takes the whole batch, and bit-identical to each other.
func TestDataParallelEquivalence(t *testing.T) {
	const steps = 50
	cases := []struct{ k, b int }{{1, 29}, {2, 29}, {3, 29}, {4, 29}, {6, 4}}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("K=%d,B=%d", tc.k, tc.b), func(t *testing.T) {
			cfg := LocalConfig()
			ref := mustTrainer(t, cfg)
			members := make([]*Trainer, tc.k)
			for r := range members {
				members[r] = mustTrainer(t, cfg)
			}
			avg := make([]float32, cfg.NumParams())
			sum := make([]float64, cfg.NumParams())
			for step := 0; step < steps; step++ {
				if _, err := ref.TrainStep(tc.b); err != nil {
					t.Fatal(err)
				}
				clear(sum)
				weight := 0
				for r, m := range members {
					_, n := m.LocalGrad(r, tc.k, tc.b)
					for i, g := range m.Grads() {
						sum[i] += float64(n) * float64(g)
					}
					weight += n
				}
				if weight != tc.b {
					t.Fatalf("step %d: weights sum to %d, want %d", step, weight, tc.b)
				}
				for i := range avg {
					avg[i] = float32(sum[i] / float64(weight))
				}
				for _, m := range members {
					if err := m.Apply(avg); err != nil {
						t.Fatal(err)
					}
				}
			}
			for r, m := range members[1:] {
				if m.ParamHash() != members[0].ParamHash() {
					t.Errorf("member %d params differ from member 0", r+1)
				}
			}
			worst := 0.0
			for i, want := range ref.Params() {
				got := members[0].Params()[i]
				d := math.Abs(float64(got - want))
				worst = max(worst, d)
				if d > 1e-4+1e-4*math.Abs(float64(want)) {
					t.Errorf("param %d after %d steps: %v with K=%d, %v with one worker", i, steps, got, tc.k, want)
				}
			}
			t.Logf("max |param difference| after %d steps: %.2g", steps, worst)
		})
	}
}

func mustTrainer(t testing.TB, cfg Config) *Trainer {
	t.Helper()
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}
