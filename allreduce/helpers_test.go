package allreduce

import (
	"context"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// testIDs returns n distinct, valid peer IDs (deterministic).
func testIDs(t testing.TB, n int) []peer.ID {
	t.Helper()
	r := rand.NewChaCha8([32]byte{7})
	ids := make([]peer.ID, n)
	for i := range ids {
		_, pub, err := crypto.GenerateEd25519Key(r)
		if err != nil {
			t.Fatal(err)
		}
		ids[i], err = peer.IDFromPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// testInputs returns n buffers of length l with values in [-1, 1).
func testInputs(seed uint64, n, l int) [][]float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([][]float32, n)
	for i := range out {
		out[i] = make([]float32, l)
		for j := range out[i] {
			out[i][j] = float32(r.Float64()*2 - 1)
		}
	}
	return out
}

type outcome struct {
	dst []float32
	res Result
	err error
}

// runRound runs one AllReduce per member concurrently, member i with
// reducer rs[i], and returns every outcome. opts[i] is member i's options.
func runRound(ctx context.Context, rs []*Reducer, round Round, src [][]float32, opts []Options) []outcome {
	return runRoundAs(ctx, rs, round.Ring, round, src, opts)
}

// runRoundAs is runRound where reducer i runs as selves[i].
func runRoundAs(ctx context.Context, rs []*Reducer, selves []peer.ID, round Round, src [][]float32, opts []Options) []outcome {
	out := make([]outcome, len(rs))
	var wg sync.WaitGroup
	for i := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := make([]float32, len(src[i]))
			res, err := rs[i].AllReduce(ctx, selves[i], round, src[i], dst, opts[i])
			out[i] = outcome{dst, res, err}
		}()
	}
	wg.Wait()
	return out
}

func sameOpts(n int, o Options) []Options {
	out := make([]Options, n)
	for i := range out {
		out[i] = o
	}
	return out
}

// memRing builds a MemNetwork with one reducer per member.
func memRing(t testing.TB, cfg Config, ids []peer.ID) (*MemNetwork, []*Reducer) {
	t.Helper()
	net := NewMemNetwork(cfg, 256<<10, nil)
	t.Cleanup(net.Close)
	rs := make([]*Reducer, len(ids))
	for i, id := range ids {
		rs[i] = New(cfg, net.Transport(id), nil, nil)
	}
	return net, rs
}

// reference computes the expected result in float64.
func reference(src [][]float32, opts []Options) ([]float64, float64) {
	l := len(src[0])
	ref := make([]float64, l)
	total := 0.0
	for i, s := range src {
		w := weight(opts[i])
		total += w
		for j, v := range s {
			ref[j] += w * float64(v)
		}
	}
	if opts[0].Op != Sum {
		for j := range ref {
			ref[j] /= total
		}
	}
	return ref, total
}

// tolerance is the allowed absolute error per unit of sum(|w x|).
func tolerance(dt DType, n int) float64 {
	switch dt {
	case BFloat16:
		return float64(n+1) * math.Pow(2, -8)
	case Float16:
		return float64(n+1) * math.Pow(2, -11)
	}
	return float64(n+1) * math.Pow(2, -22)
}

// checkOutcomes asserts success, bit-identical results and closeness to
// the float64 reference.
func checkOutcomes(t *testing.T, outs []outcome, src [][]float32, opts []Options) {
	t.Helper()
	ref, total := checkIdentical(t, outs, src, opts)
	tol := tolerance(opts[0].Wire, len(src))
	for j, want := range ref {
		scale := 0.0
		for i := range src {
			scale += math.Abs(weight(opts[i]) * float64(src[i][j]))
		}
		if opts[0].Op != Sum {
			scale /= total
		}
		if got := float64(outs[0].dst[j]); math.Abs(got-want) > tol*scale+1e-30 {
			t.Fatalf("element %d: got %v, want %v (tolerance %v)", j, got, want, tol*scale)
		}
	}
}

// weight is the weight a member's options give its contribution.
func weight(o Options) float64 {
	if o.Op == WeightedMean {
		return o.Weight
	}
	return 1
}

// checkIdentical asserts success, bit-identical results and the total
// weight, and returns the float64 reference and total weight.
func checkIdentical(t *testing.T, outs []outcome, src [][]float32, opts []Options) ([]float64, float64) {
	t.Helper()
	for i, o := range outs {
		if o.err != nil {
			t.Fatalf("member %d: got error %v, want success", i, o.err)
		}
	}
	for i := 1; i < len(outs); i++ {
		if outs[i].res != outs[0].res {
			t.Fatalf("member %d: got result %+v, member 0 got %+v", i, outs[i].res, outs[0].res)
		}
		for j := range outs[i].dst {
			if math.Float32bits(outs[i].dst[j]) != math.Float32bits(outs[0].dst[j]) {
				t.Fatalf("member %d element %d: got %v, member 0 got %v (not bit-identical)", i, j, outs[i].dst[j], outs[0].dst[j])
			}
		}
	}
	ref, total := reference(src, opts)
	if opts[0].Op == WeightedMean && outs[0].res.TotalWeight != total {
		t.Fatalf("got total weight %v, want %v", outs[0].res.TotalWeight, total)
	}
	if opts[0].Op != WeightedMean && outs[0].res.TotalWeight != float64(len(src)) {
		t.Fatalf("got total weight %v, want %d", outs[0].res.TotalWeight, len(src))
	}
	return ref, total
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(testCtx(t))
	t.Cleanup(cancel)
	return ctx, cancel
}

// requireUnchanged asserts that AllReduce left its inputs alone.
func requireUnchanged(t *testing.T, src, orig [][]float32) {
	t.Helper()
	for i := range src {
		for j := range src[i] {
			if math.Float32bits(src[i][j]) != math.Float32bits(orig[i][j]) {
				t.Fatalf("member %d: src[%d] changed from %v to %v", i, j, orig[i][j], src[i][j])
			}
		}
	}
}
