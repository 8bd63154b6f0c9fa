package allreduce

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// checkQuantOutcomes asserts success, bit-identical results and the
// per-hop bound of a block format, and returns the relative RMS error
// against the float64 reference. A round quantizes n times (the first
// send, n-2 re-encodes, the finish); each time an element moves by at
// most c times its block's largest magnitude (c = 1/254 for Int8, 1/4
// for Float4), and that magnitude is at most M = max_j sum_i |w_i x_ij|
// plus the error so far, so the error is at most M((1+c)^n - 1), scaled
// by the op's final multiplier.
func checkQuantOutcomes(t *testing.T, outs []outcome, src [][]float32, opts []Options) float64 {
	t.Helper()
	ref, total := checkIdentical(t, outs, src, opts)
	m := 0.0
	for j := range ref {
		s := 0.0
		for i := range src {
			s += math.Abs(weight(opts[i]) * float64(src[i][j]))
		}
		m = max(m, s)
	}
	if opts[0].Op != Sum {
		m /= total
	}
	n, c := float64(len(src)), 1/(2*qmax(opts[0].Wire))
	if opts[0].Wire == Float4 {
		c = 0.25
	}
	bound := m*(math.Pow(1+c, n)-1)*(1+0x1p-12) + m*n*0x1p-20
	var se, sr float64
	for j, want := range ref {
		got := float64(outs[0].dst[j])
		if e := math.Abs(got - want); e > bound || e != e {
			t.Fatalf("element %d: got %v, want %v (bound %v)", j, got, want, bound)
		}
		se += (got - want) * (got - want)
		sr += want * want
	}
	if sr == 0 {
		return 0
	}
	return math.Sqrt(se / sr)
}

func TestAllReduceQuant(t *testing.T) {
	shapes := []struct {
		lanes, chunk int
		lens         []int
	}{
		{1, MinChunkBytes, []int{1, 63, 3001}},
		{2, 4096 + 4, []int{2, 65, 10_007}},
		{3, 64 << 10, []int{777, 40_001}},
	}
	for _, n := range []int{2, 3, 5} {
		for _, dt := range quantTypes {
			for _, op := range []Op{Sum, Mean, WeightedMean} {
				for _, sh := range shapes {
					for _, l := range sh.lens {
						t.Run(fmt.Sprintf("n=%d/%v/%v/lanes=%d/chunk=%d/len=%d", n, dt, op, sh.lanes, sh.chunk, l), func(t *testing.T) {
							cfg := testConfig()
							cfg.Lanes, cfg.ChunkBytes = sh.lanes, sh.chunk
							ids := testIDs(t, n)
							_, rs := memRing(t, cfg, ids)
							src := testInputs(uint64(n*l), n, l)
							orig := testInputs(uint64(n*l), n, l)
							opts := sameOpts(n, Options{Wire: dt, Op: op})
							for i := range opts {
								opts[i].Weight = float64(i + 1)
							}
							outs := runRound(testCtx(t), rs, Round{Mesh: "m", Step: 3, Ring: ids}, src, opts)
							checkQuantOutcomes(t, outs, src, opts)
							requireUnchanged(t, src, orig)
						})
					}
				}
			}
		}
	}
}

func TestStreamAllReduceQuant(t *testing.T) {
	for _, n := range []int{2, 3, 5} {
		for _, direct := range []bool{true, false} {
			t.Run(fmt.Sprintf("n=%d/direct=%v", n, direct), func(t *testing.T) {
				hs := newHosts(t, n)
				cfg := testConfig()
				cfg.DirectLanes = direct
				ids, rs := streamRing(t, cfg, hs)
				round := Round{Mesh: "lab", Step: 1, Ring: ids}
				for _, o := range []Options{{Wire: Int8, Op: WeightedMean}, {Wire: Float4, Op: Mean}} {
					src := testInputs(uint64(n), n, 20_011)
					opts := sameOpts(n, o)
					for i := range opts {
						opts[i].Weight = float64(2 * (i + 1))
					}
					outs := runRound(testCtx(t), rs, round, src, opts)
					checkQuantOutcomes(t, outs, src, opts)
					round.Step++
				}
			})
		}
	}
}

// TestQuantMeanError reports each wire format's error on a 4-member mean
// of Gaussian data, and of heavy-tailed (Student's t, 3 degrees of
// freedom) data, where Float4's floating grid does better than a uniform
// one would.
func TestQuantMeanError(t *testing.T) {
	const n, l = 4, 1 << 16
	r := rand.New(rand.NewPCG(5, 6))
	student := func() float64 {
		c := 0.0
		for range 3 {
			g := r.NormFloat64()
			c += g * g
		}
		return r.NormFloat64() / math.Sqrt(c/3)
	}
	// Bounds: about twice what was measured.
	limits := map[DType]float64{Float32: 1e-6, BFloat16: 0.01, Float16: 0.002, Int8: 0.02, Float4: 0.35}
	for _, data := range []string{"gauss", "student3"} {
		src := make([][]float32, n)
		for i := range src {
			src[i] = make([]float32, l)
			for j := range src[i] {
				if data == "gauss" {
					src[i][j] = float32(r.NormFloat64())
				} else {
					src[i][j] = float32(student())
				}
			}
		}
		for _, dt := range []DType{Float32, BFloat16, Float16, Int8, Float4} {
			ids := testIDs(t, n)
			_, rs := memRing(t, LocalConfig(), ids)
			opts := sameOpts(n, Options{Wire: dt, Op: Mean})
			outs := runRound(testCtx(t), rs, Round{Mesh: "m", Ring: ids}, src, opts)
			ref, _ := checkIdentical(t, outs, src, opts)
			var se, sr float64
			for j, want := range ref {
				d := float64(outs[0].dst[j]) - want
				se += d * d
				sr += want * want
			}
			rel := math.Sqrt(se / sr)
			t.Logf("%s, mean of %d, %v wire (%.4f bytes/element): relative RMS error %.2e", data, n, dt, float64(dt.WireLen(l))/l, rel)
			if rel > limits[dt] {
				t.Errorf("%s %v: relative RMS error %v, want at most %v", data, dt, rel, limits[dt])
			}
		}
	}
}

// TestQuantNonFiniteRound: an infinity in one member's input makes the
// elements of its block NaN on every member, bit-identically, and leaves
// the other blocks finite; float32 gives the infinity itself.
func TestQuantNonFiniteRound(t *testing.T) {
	const n, l, bad = 3, 5000, 1234
	for _, dt := range []DType{Float32, Int8, Float4} {
		t.Run(dt.String(), func(t *testing.T) {
			ids := testIDs(t, n)
			_, rs := memRing(t, testConfig(), ids)
			src := testInputs(8, n, l)
			src[1][bad] = float32(math.Inf(1))
			outs := runRound(testCtx(t), rs, Round{Mesh: "m", Ring: ids}, src, sameOpts(n, Options{Wire: dt, Op: Sum}))
			for i, o := range outs {
				if o.err != nil {
					t.Fatalf("member %d: %v", i, o.err)
				}
				for j, v := range o.dst {
					if math.Float32bits(v) != math.Float32bits(outs[0].dst[j]) {
						t.Fatalf("member %d element %d: got %v, member 0 got %v", i, j, v, outs[0].dst[j])
					}
				}
			}
			got, nans := outs[0].dst, 0
			for j, v := range got {
				switch {
				case v != v:
					nans++
					if j <= bad-quantBlock || j >= bad+quantBlock {
						t.Fatalf("element %d is NaN, not in the block of the infinity at %d", j, bad)
					}
				case math.IsInf(float64(v), 0) && (dt != Float32 || j != bad):
					t.Fatalf("element %d is %v", j, v)
				}
			}
			if dt == Float32 && (!math.IsInf(float64(got[bad]), 1) || nans != 0) {
				t.Fatalf("float32: got %v at %d and %d NaNs, want +Inf and none", got[bad], bad, nans)
			}
			if dt != Float32 && (got[bad] == got[bad] || nans > quantBlock) {
				t.Fatalf("%v: got %v at %d and %d NaNs, want NaN in one block", dt, got[bad], bad, nans)
			}
		})
	}
}
