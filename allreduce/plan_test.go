package allreduce

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// planTime is the model time of a plan: each direction carries half the
// buffer (S = 1), and rank r of a direction sends 2 - own(r) - own(r+1)
// of its half over the link r -> r+1; the slowest link sets the time.
func planTime(p Plan, links []Link) float64 {
	n := len(links)
	seq := [2][]int{slices.Clone(p.Order), slices.Clone(p.Order)}
	slices.Reverse(seq[1])
	var worst float64
	sent := make([]float64, n) // per member, both directions
	for d := range 2 {
		for r := range n {
			own := func(r int) float64 {
				if p.Equal() {
					return 1 / float64(n)
				}
				return float64(p.Own[d][r%n]) / PlanUnits
			}
			sent[seq[d][r]] += 0.5 * (2 - own(r) - own(r+1))
		}
	}
	for i, l := range links {
		worst = max(worst, sent[i]/float64(l.Egress))
	}
	return worst
}

// bound is the lower bound of the issue: every member sends at least S.
func bound(links []Link) float64 {
	slow := links[0].Egress
	for _, l := range links {
		slow = min(slow, l.Egress)
	}
	return 1 / float64(slow)
}

func egress(rates ...uint64) []Link {
	out := make([]Link, len(rates))
	for i, r := range rates {
		out[i] = Link{Egress: r}
	}
	return out
}

// TestPlanNearBound: on the labs of the heterogeneity issue (egress only,
// in Mbit/s) the plan's model time is within 2% of the bound S/min(egress),
// while equal segments take about 1.6x.
func TestPlanNearBound(t *testing.T) {
	for _, tc := range []struct {
		name  string
		links []Link
	}{
		{"2x1G+2x200M", egress(1000, 200, 1000, 200)},
		{"3x1G+1x100M", egress(1000, 1000, 100, 1000)},
		{"1G,500M,200M,100M", egress(100, 1000, 200, 500)},
		{"8 mixed", egress(1000, 100, 1000, 250, 1000, 1000, 500, 100)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanRound(tc.links)
			if p.Equal() {
				t.Fatalf("mixed links got equal segments")
			}
			eq := planTime(Plan{Order: p.Order}, tc.links) / bound(tc.links)
			got := planTime(p, tc.links) / bound(tc.links)
			t.Logf("order %v: plan %.3f of the bound, equal segments %.3f", p.Order, got, eq)
			if got > 1.02 {
				t.Errorf("plan takes %.3f of the bound, want <= 1.02", got)
			}
			if eq < 1.3 {
				t.Errorf("equal segments take %.3f of the bound: the case does not test anything", eq)
			}
		})
	}
}

// TestPlanProperties: over random rings and rates (and unknown rates) a
// plan orders every member once, each direction's weights sum to
// PlanUnits, its segments cut any lane exactly, its model time is never
// above equal segments', and the same inputs give the same plan and hash.
func TestPlanProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		n := 2 + rng.IntN(15)
		links := make([]Link, n)
		for j := range links {
			links[j].Egress = uint64(1+rng.IntN(4)) * []uint64{1e6, 1e7, 1e8, 1e9}[rng.IntN(4)]
			if rng.IntN(3) == 0 {
				links[j].Ingress = uint64(1+rng.IntN(10)) * 1e8
			}
		}
		if i%50 == 0 {
			links[rng.IntN(n)].Egress = 0
		}
		p := PlanRound(links)
		q := PlanRound(slices.Clone(links))
		if !slices.Equal(p.Order, q.Order) || p.Hash() != q.Hash() {
			t.Fatalf("%v: two plans of the same links differ: %+v %+v", links, p, q)
		}
		if got := slices.Sorted(slices.Values(p.Order)); !slices.Equal(got, seq(n)) {
			t.Fatalf("%v: order %v is not a permutation", links, p.Order)
		}
		if p.Equal() {
			continue
		}
		for d, own := range p.Own {
			var sum uint64
			for _, w := range own {
				sum += uint64(w)
			}
			if len(own) != n || sum != PlanUnits {
				t.Fatalf("%v: direction %d weights %v sum to %d", links, d, own, sum)
			}
			for _, length := range []int{0, 1, n, 1000, 1 << 24} {
				segs := segments(length, own)
				off := 0
				for _, s := range segs {
					if s.Off != off || s.Len < 0 {
						t.Fatalf("segments of %d by %v: %v", length, own, segs)
					}
					off += s.Len
				}
				if off != length {
					t.Fatalf("segments of %d by %v cover %d", length, own, off)
				}
			}
		}
		egressOnly := true
		for _, l := range links {
			egressOnly = egressOnly && l.Ingress == 0
		}
		if egressOnly && planTime(p, links) > planTime(Plan{Order: seq(n)}, links)*1.0001 {
			t.Fatalf("%v: plan %v slower than equal segments", links, p)
		}
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// TestPlanGolden pins the plan function: it is part of the protocol (the
// header carries its hash), so a change here must bump Version.
func TestPlanGolden(t *testing.T) {
	p := PlanRound(egress(1000e6/8, 200e6/8, 1000e6/8, 200e6/8))
	if !slices.Equal(p.Order, []int{1, 3, 0, 2}) {
		t.Errorf("order %v, want slow first [1 3 0 2]", p.Order)
	}
	h := p.Hash()
	got := fmt.Sprintf("%v %v %s", p.Own[0], p.Own[1], hex.EncodeToString(h[:8]))
	const want = "[0 1048576 0 0] [0 0 0 1048576] f9b597bfaab8b4b9"
	if got != want {
		t.Errorf("plan %s\nwant %s", got, want)
	}
	if PlanRound(egress(5, 5, 5)).Hash() != (Plan{Order: []int{0, 1, 2}}).Hash() {
		t.Errorf("equal links do not give the classic ring")
	}
}

// TestAllReducePlanned: rounds under skewed plans (some segments empty)
// give every member the reference result, bit-identical.
func TestAllReducePlanned(t *testing.T) {
	for _, tc := range []struct {
		name  string
		links []Link
	}{
		{"two slow", egress(1000, 200, 1000, 200)},
		{"one slow", egress(1000, 1000, 100, 1000)},
		{"ingress", []Link{{1000, 100}, {1000, 1000}, {300, 1000}}},
		{"pair", egress(10, 1000)},
	} {
		for _, op := range []Op{Sum, WeightedMean} {
			t.Run(fmt.Sprintf("%s/%v", tc.name, op), func(t *testing.T) {
				n := len(tc.links)
				ids := testIDs(t, n)
				cfg := testConfig()
				cfg.Lanes = 2
				_, rs := memRing(t, cfg, ids)
				src := testInputs(uint64(n)+7, n, 5003)
				opts := sameOpts(n, Options{Wire: Float32, Op: op})
				for i := range opts {
					opts[i].Weight = float64(3*i + 1)
				}
				outs := runRound(testCtx(t), rs, Round{Mesh: "m", Step: 3, Ring: ids, Links: tc.links}, src, opts)
				checkOutcomes(t, outs, src, opts)
			})
		}
	}
}

// TestAllReducePlanMismatch: members that compute different plans (here:
// one was handed other links) fail with a settings mismatch, not a hang
// or a retryable error.
func TestAllReducePlanMismatch(t *testing.T) {
	n := 3
	ids := testIDs(t, n)
	_, rs := memRing(t, testConfig(), ids)
	src := testInputs(5, n, 2000)
	opts := sameOpts(n, Options{Wire: Float32, Op: Sum})
	round := Round{Mesh: "m", Step: 1, Ring: ids, Links: egress(100, 100, 1000)}
	other := round
	other.Links = egress(1000, 100, 100)
	ctx := testCtx(t)
	outs := make(chan error, n)
	for i := range n {
		r := round
		if i == 0 {
			r = other
		}
		go func() {
			_, err := rs[i].AllReduce(ctx, ids[i], r, src[i], make([]float32, len(src[i])), opts[i])
			outs <- err
		}()
	}
	settings := 0
	for range n {
		err := <-outs
		if err == nil {
			t.Fatalf("a member succeeded with another plan")
		}
		if errors.Is(err, ErrSettingsMismatch) {
			settings++
		}
	}
	if settings == 0 {
		t.Errorf("no member saw a settings mismatch")
	}
}
