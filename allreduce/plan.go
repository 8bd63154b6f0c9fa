package allreduce

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// Link is a member's link rates in bytes per second, as its node estimates
// and advertises them; 0 is unknown.
type Link struct {
	Egress, Ingress uint64
}

// PlanUnits is the total of one direction's segment weights in a Plan.
const PlanUnits = 1 << 20

// Plan is the schedule of a round beyond the segment and chunk arithmetic:
// the ring order, and for each direction how much of a lane each member
// finishes. It is a pure function of the round's links (PlanRound), so
// every member computes the same one from the same agreed rates; the
// header carries its hash.
type Plan struct {
	// Order lists indices into Round.Ring in ring order.
	Order []int
	// Own[d][r] is the weight of the segment that rank r of direction d
	// finishes (d 0: even lanes, in Order; d 1: odd lanes, in reverse
	// Order); each sums to PlanUnits. Nil: equal segments.
	Own [2][]uint32
}

// Equal reports whether the plan cuts lanes into equal segments.
func (p Plan) Equal() bool { return p.Own[0] == nil }

// Hash is SHA-256 over the plan (order as u16s, then each direction's
// weights as u32s), the header's schedule hash.
func (p Plan) Hash() [32]byte {
	h := sha256.New()
	h.Write([]byte("ringmesh plan 1"))
	var b []byte
	for _, i := range p.Order {
		b = binary.BigEndian.AppendUint16(b, uint16(i))
	}
	for _, own := range p.Own {
		b = binary.BigEndian.AppendUint32(b, uint32(len(own)))
		for _, w := range own {
			b = binary.BigEndian.AppendUint32(b, w)
		}
	}
	h.Write(b)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// PlanRound computes the schedule of a ring whose members have links
// (aligned with the ring). With any rate unknown, or all links alike, it is
// the classic ring: the given order and equal segments.
//
// Otherwise members go round the ring from the slowest link to the fastest
// (so slow links are neighbours and the ring crosses from slow to fast
// once), and each direction's segment weights minimise the time of the
// slowest link. In a lane of S bytes, rank r of n sends S - own(r) in the
// reduce-scatter (all but the segment it finishes) and S - own(r+1) in the
// all-gather (all but the one its successor finishes): 2S - own(r) -
// own(r+1) over the link r -> r+1, whose rate is min(egress of r, ingress
// of r+1). A member with slow egress and its successor finish large
// segments, so it sends about S instead of 2S(n-1)/n. The weights come
// from a search in integer arithmetic only (no floating point, whose
// rounding may differ between platforms), so the plan is the same on every
// member.
func PlanRound(links []Link) Plan {
	n := len(links)
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	rates := make([]uint64, n)
	alike := true
	for i, l := range links {
		if l.Egress == 0 {
			return Plan{Order: order}
		}
		rates[i] = l.Egress
		if l.Ingress > 0 {
			rates[i] = min(rates[i], l.Ingress)
		}
		alike = alike && rates[i] == rates[0]
	}
	if n < 2 || alike {
		return Plan{Order: order}
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(rates[a], rates[b]) })
	var p Plan
	p.Order = order
	for d := range 2 {
		seq := slices.Clone(order)
		if d == 1 {
			slices.Reverse(seq)
		}
		// The rate of the link from rank r to rank r+1 in this direction.
		link := make([]uint64, n)
		for r, i := range seq {
			next := links[seq[(r+1)%n]]
			link[r] = links[i].Egress
			if next.Ingress > 0 {
				link[r] = min(link[r], next.Ingress)
			}
		}
		own := solveOwn(link)
		if own == nil {
			return Plan{Order: order}
		}
		p.Own[d] = own
	}
	return p
}

// solveOwn returns the segment weights (summing to PlanUnits) that
// minimise max_r (2W - own[r] - own[r+1]) / link[r], or nil when equal
// segments do as well (within 2%).
func solveOwn(link []uint64) []uint32 {
	n := len(link)
	const W = int64(PlanUnits)
	// Rates relative to the fastest, in 1/1024ths, at least 1.
	fast := slices.Max(link)
	q := make([]int64, n)
	for r, l := range link {
		q[r] = max(1, int64(l*1024/fast))
	}
	// Time T is in units where a link of q sends T*q/1024 weight units.
	cover := make([]int64, n)
	need := func(T int64) []int64 {
		for r := range n {
			cover[r] = max(0, 2*W-T*q[r]/1024)
		}
		return cover
	}
	lo, hi := int64(0), 2*W*1024/slices.Min(q)+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		if _, sum := minCover(need(mid)); sum <= W {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	own, sum := minCover(need(hi))
	// Equal segments take the time of their slowest link.
	var tEqual int64
	for r := range n {
		tEqual = max(tEqual, (2*W-2*W/int64(n))*1024/q[r])
	}
	if tEqual*100 <= hi*102 {
		return nil
	}
	// Spread what is left over evenly: more weight only lowers what a
	// link carries.
	slack := W - sum
	out := make([]uint32, n)
	for r := range n {
		v := own[r] + slack/int64(n)
		if r == 0 {
			v += slack % int64(n)
		}
		out[r] = uint32(v)
	}
	return out
}

// minCover returns weights own >= 0 with own[r] + own[(r+1)%n] >= c[r] for
// every r, and their sum, as small as a search over own[0] finds: for a
// given own[0] every next weight is the least that covers its link, and
// the last is raised to close the ring.
func minCover(c []int64) ([]int64, int64) {
	n := len(c)
	o := make([]int64, n)
	eval := func(a int64) int64 {
		o[0] = a
		sum := a
		for r := 0; r < n-1; r++ {
			o[r+1] = max(0, c[r]-o[r])
			sum += o[r+1]
		}
		if d := c[n-1] - a - o[n-1]; d > 0 {
			o[n-1] += d
			sum += d
		}
		return sum
	}
	// Coarse to fine over own[0] in [0, max c].
	const grid = 32
	lo, hi := int64(0), slices.Max(c)
	bestA, best := int64(0), eval(0)
	for {
		step := max(1, (hi-lo)/grid)
		for a := lo; a <= hi; a += step {
			if s := eval(a); s < best {
				bestA, best = a, s
			}
		}
		if step == 1 {
			break
		}
		lo, hi = max(0, bestA-step), bestA+step
	}
	eval(bestA)
	return slices.Clone(o), best
}

// segments cuts a lane of length elements by weights own (rank r finishes
// segment r+1): segment j gets own[j-1] of PlanUnits, rounded down at the
// boundaries so that the parts add up to length exactly.
func segments(length int, own []uint32) []span {
	n := len(own)
	out := make([]span, n)
	var cum uint64
	off := 0
	for j := range n {
		cum += uint64(own[(j+n-1)%n])
		end := int(uint64(length) * cum / PlanUnits)
		if j == n-1 {
			end = length
		}
		out[j] = span{off, end - off}
		off = end
	}
	return out
}
