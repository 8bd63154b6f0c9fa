package rounds

import (
	"math"
	"slices"
	"time"
)

// How the proposer splits the next step's global batch (planShares):
// each ring member's new share follows its speed, in share units per
// second, taken as the lower of what its node advertises (none: the
// member keeps its share) and speedSlack times what the proposer measured
// itself (the member's share
// over the time from the step's opening here to its offer's arrival), so
// a member that claims more than its timings show is held to its
// timings. A share moves by at most maxShareChange of itself per step and
// never below 1/(shareFloorDiv*n) of the batch; a member admitted by the
// step starts with an equal share (its probe). The shares always add up
// to ShareUnits: the global batch is the same whoever is in the list.
// A member whose step took within shareDeadBand (at least minDeadBand) of
// the members' mean time keeps its share, so that shares do not drift
// with timing noise once balanced, or when what the step costs does not
// scale with the share.
const (
	maxShareChange = 0.25
	shareFloorDiv  = 16
	speedSlack     = 1.25
	shareDeadBand  = 0.03
	minDeadBand    = 3 * time.Millisecond
)

// ringLinks returns the ring members' advertised links (aligned with
// ring), or nil unless every one is known.
func (m *Machine) ringLinks(ring []ID) []Link {
	out := make([]Link, len(ring))
	for i, id := range ring {
		l := m.link
		if id != m.self {
			l = m.peers[id].Info.Link
		}
		if l.Egress == 0 {
			return nil
		}
		out[i] = l
	}
	return out
}

// speedOf is the speed planShares uses for ring member id whose share of
// the open step is units; 0 when its node advertises none (its trainer
// does not follow shares, or has not stepped yet).
func (m *Machine) speedOf(id ID, units uint32) float64 {
	adv := m.speed
	if id != m.self {
		adv = float64(m.peers[id].Info.Speed)
	}
	var measured float64
	if t, ok := m.offerSeen[id]; ok && !m.stepAt.IsZero() && t.After(m.stepAt) {
		measured = float64(units) / t.Sub(m.stepAt).Seconds()
	}
	if adv > 0 && measured > 0 {
		return min(adv, speedSlack*measured)
	}
	return adv
}

// planShares returns the shares of the step after this one (aligned with
// next) for an attempt over ring.
func (m *Machine) planShares(ring, next []ID) []uint32 {
	list, cur := m.Shares()
	curOf := make(map[ID]float64, len(list))
	for i, id := range list {
		curOf[id] = float64(cur[i])
	}
	n := float64(len(next))
	probe, floor := ShareUnits/n, ShareUnits/(shareFloorDiv*n)
	want := make([]float64, len(next))
	lo, hi := make([]float64, len(next)), make([]float64, len(next))
	speeds := make([]float64, len(next))
	var pool, speedSum float64 // units for members with a known speed, and their speeds
	pool = ShareUnits
	for i, id := range next {
		c, inList := curOf[id]
		if !inList || !slices.Contains(ring, id) {
			want[i], lo[i], hi[i] = probe, probe, probe
			pool -= probe
			continue
		}
		lo[i], hi[i] = max(floor, c*(1-maxShareChange)), max(floor, c*(1+maxShareChange))
		if speeds[i] = m.speedOf(id, uint32(c)); speeds[i] > 0 {
			speedSum += speeds[i]
		} else {
			want[i] = c
			pool -= c
		}
	}
	// Members whose step took about the mean time keep their share: where
	// the steps' times are all alike (balanced, or dominated by what does
	// not scale with the share) moving shares would only follow noise.
	var tSum float64
	var timed int
	for i, id := range next {
		if speeds[i] > 0 {
			tSum += curOf[id] / speeds[i]
			timed++
		}
	}
	if timed > 0 {
		tMean := tSum / float64(timed)
		band := max(shareDeadBand*tMean, float64(minDeadBand)/float64(time.Second))
		for i, id := range next {
			if speeds[i] > 0 && math.Abs(curOf[id]/speeds[i]-tMean) <= band {
				speedSum -= speeds[i]
				speeds[i] = 0
				want[i] = curOf[id]
				pool -= curOf[id]
			}
		}
	}
	for i := range next {
		if speeds[i] > 0 {
			want[i] = max(pool, 0) * speeds[i] / speedSum
		}
		want[i] = min(max(want[i], lo[i]), hi[i])
	}
	// The clamps may leave the total off ShareUnits: move the difference
	// onto the members that can still take it, in proportion to their
	// shares (water filling); normalize absorbs what is left.
	for range 2 * len(next) {
		var total, movable float64
		for i := range want {
			total += want[i]
		}
		d := ShareUnits - total
		if math.Abs(d) < 1 {
			break
		}
		for i := range want {
			if (d > 0 && want[i] < hi[i]) || (d < 0 && want[i] > lo[i]) {
				movable += want[i]
			}
		}
		if movable == 0 {
			break
		}
		for i := range want {
			if (d > 0 && want[i] < hi[i]) || (d < 0 && want[i] > lo[i]) {
				want[i] = min(max(want[i]+d*want[i]/movable, lo[i]), hi[i])
			}
		}
	}
	return normalize(want)
}

// normalize scales w to integers that add up to ShareUnits (largest
// remainders first, ties to the lower index).
func normalize(w []float64) []uint32 {
	var sum float64
	for _, x := range w {
		sum += x
	}
	out := make([]uint32, len(w))
	rem := make([]float64, len(w))
	var total uint64
	for i, x := range w {
		v := x * ShareUnits / sum
		out[i] = uint32(math.Floor(v))
		rem[i] = v - math.Floor(v)
		total += uint64(out[i])
	}
	idx := make([]int, len(w))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case rem[a] > rem[b]:
			return -1
		case rem[a] < rem[b]:
			return 1
		}
		return 0
	})
	for k := 0; total < ShareUnits; k++ {
		out[idx[k%len(idx)]]++
		total++
	}
	return out
}
