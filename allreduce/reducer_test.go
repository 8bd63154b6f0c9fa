package allreduce

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testConfig() Config {
	c := LocalConfig()
	c.ChunkBytes = MinChunkBytes
	return c
}

func TestAllReduceSizes(t *testing.T) {
	for n := 1; n <= 8; n++ {
		for _, l := range []int{0, 1, n - 1, n + 1, 1027} {
			t.Run(fmt.Sprintf("n=%d/len=%d", n, l), func(t *testing.T) {
				ids := testIDs(t, n)
				_, rs := memRing(t, testConfig(), ids)
				src := testInputs(uint64(n*1000+l), n, l)
				opts := sameOpts(n, Options{Wire: Float32, Op: Sum})
				outs := runRound(testCtx(t), rs, Round{Mesh: "m", Step: 1, Ring: ids}, src, opts)
				checkOutcomes(t, outs, src, opts)
			})
		}
	}
}

func TestAllReduceOpsAndWires(t *testing.T) {
	for _, n := range []int{2, 3, 5} {
		for _, op := range []Op{Sum, Mean, WeightedMean} {
			for _, dt := range []DType{Float32, BFloat16, Float16} {
				t.Run(fmt.Sprintf("n=%d/%v/%v", n, op, dt), func(t *testing.T) {
					ids := testIDs(t, n)
					_, rs := memRing(t, testConfig(), ids)
					src := testInputs(uint64(n), n, 3001)
					opts := sameOpts(n, Options{Wire: dt, Op: op})
					for i := range opts {
						opts[i].Weight = float64(i + 1)
					}
					orig := testInputs(uint64(n), n, 3001)
					outs := runRound(testCtx(t), rs, Round{Mesh: "m", Step: 7, Attempt: 2, Ring: ids}, src, opts)
					checkOutcomes(t, outs, src, opts)
					requireUnchanged(t, src, orig)
				})
			}
		}
	}
}

func TestAllReduceLanes(t *testing.T) {
	for _, lanes := range []int{1, 3, 4} {
		t.Run(fmt.Sprintf("lanes=%d", lanes), func(t *testing.T) {
			cfg := testConfig()
			cfg.Lanes = lanes
			ids := testIDs(t, 4)
			_, rs := memRing(t, cfg, ids)
			src := testInputs(3, 4, 5000)
			opts := sameOpts(4, Options{Wire: BFloat16, Op: WeightedMean, Weight: 3})
			outs := runRound(testCtx(t), rs, Round{Mesh: "m", Step: 1, Ring: ids}, src, opts)
			checkOutcomes(t, outs, src, opts)
		})
	}
}

func TestAllReduceAliased(t *testing.T) {
	n := 3
	ids := testIDs(t, n)
	_, rs := memRing(t, testConfig(), ids)
	src := testInputs(5, n, 4000)
	opts := sameOpts(n, Options{Wire: Float32, Op: Mean})
	ref, _ := reference(src, opts)
	bufs := make([][]float32, n)
	errs := make([]error, n)
	done := make(chan int)
	for i := range rs {
		bufs[i] = append([]float32(nil), src[i]...)
		go func() {
			_, errs[i] = rs[i].AllReduce(testCtx(t), ids[i], Round{Mesh: "m", Ring: ids}, bufs[i], bufs[i], opts[i])
			done <- i
		}()
	}
	for range n {
		<-done
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("member %d: got %v, want success", i, errs[i])
		}
		for j := range ref {
			if bufs[i][j] != bufs[0][j] {
				t.Fatalf("member %d element %d: got %v, member 0 got %v", i, j, bufs[i][j], bufs[0][j])
			}
			if d := float64(bufs[i][j]) - ref[j]; d > 1e-5 || d < -1e-5 {
				t.Fatalf("element %d: got %v, want %v", j, bufs[i][j], ref[j])
			}
		}
	}
}

func TestAllReduceZeroTotalWeight(t *testing.T) {
	n := 3
	ids := testIDs(t, n)
	_, rs := memRing(t, testConfig(), ids)
	src := testInputs(1, n, 100)
	outs := runRound(testCtx(t), rs, Round{Mesh: "m", Ring: ids}, src, sameOpts(n, Options{Wire: Float32, Op: WeightedMean}))
	for i, o := range outs {
		if !errors.Is(o.err, ErrZeroTotalWeight) {
			t.Fatalf("member %d: got %v, want ErrZeroTotalWeight", i, o.err)
		}
	}
}

// TestAllReduceParts: a step in several parts, each a round of its own with
// the same step and attempt, reduces every part right while members go
// through the parts at different paces (a member's part-k streams reach a
// neighbour still on part k-1, which holds them apart); a part index out
// of range is refused.
func TestAllReduceParts(t *testing.T) {
	const n, parts = 3, 4
	ids := testIDs(t, n)
	_, rs := memRing(t, testConfig(), ids)
	srcs := make([][][]float32, parts)
	for k := range srcs {
		srcs[k] = testInputs(uint64(100+k), n, 700+k*300)
	}
	opts := sameOpts(n, Options{Wire: Float32, Op: WeightedMean, Weight: 2})
	ctx := testCtx(t)
	outs := make([][]outcome, parts)
	for k := range outs {
		outs[k] = make([]outcome, n)
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range parts {
				if i == n-1 {
					time.Sleep(20 * time.Millisecond) // the last member lags a part behind
				}
				dst := make([]float32, len(srcs[k][i]))
				r := Round{Mesh: "m", Step: 5, Attempt: 1, Part: uint32(k), Parts: parts, Ring: ids}
				res, err := rs[i].AllReduce(ctx, ids[i], r, srcs[k][i], dst, opts[i])
				outs[k][i] = outcome{dst, res, err}
			}
		}()
	}
	wg.Wait()
	for k := range parts {
		checkOutcomes(t, outs[k], srcs[k], opts)
	}
	_, err := rs[0].AllReduce(ctx, ids[0], Round{Mesh: "m", Step: 6, Part: 4, Parts: 4, Ring: ids}, srcs[0][0], make([]float32, len(srcs[0][0])), opts[0])
	if !errors.Is(err, ErrBadRound) {
		t.Fatalf("part 4 of 4: %v, want ErrBadRound", err)
	}
}

// TestAllReducePartsMismatch: members that cut a step into different
// numbers of parts fail with ErrSettingsMismatch (no retry mends it).
func TestAllReducePartsMismatch(t *testing.T) {
	ids := testIDs(t, 2)
	_, rs := memRing(t, testConfig(), ids)
	src := testInputs(1, 2, 100)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := Round{Mesh: "m", Step: 1, Parts: uint32(2 + i), Ring: ids}
			_, errs[i] = rs[i].AllReduce(testCtx(t), ids[i], r, src[i], make([]float32, 100), Options{Wire: Float32, Op: Sum})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, ErrSettingsMismatch) {
			t.Errorf("member %d: %v, want ErrSettingsMismatch", i, err)
		}
	}
}
