package rounds

import (
	"slices"
	"testing"
	"time"
)

// planner is a machine of member ids[0] at a step whose shares are cur,
// whose step opened at simEpoch; offer(i, d) says member i's offer
// arrived d later.
func planner(t *testing.T, ids []ID, cur []uint32) *Machine {
	t.Helper()
	m := New(simConfig(len(ids)), ids[0], Durable{Epoch: 1, Step: 5, List: ids,
		Last: &Decided{Step: 4, Value: Value{Ring: ids, Next: ids, Shares: cur}}})
	m.now = simEpoch
	m.resetStep()
	return m
}

func sum(s []uint32) (n uint64) {
	for _, x := range s {
		n += uint64(x)
	}
	return n
}

// converge plans steps over ids whose trainers take 1/speed[i] seconds per
// whole batch, feeding each plan back as the next step's shares, and
// returns the shares of every step.
func converge(t *testing.T, ids []ID, speed []float64, adv func(i int, units uint32) uint64, steps int) [][]uint32 {
	t.Helper()
	cur := EqualShares(len(ids))
	var out [][]uint32
	for range steps {
		m := planner(t, ids, cur)
		peers := make([]Peer, 0, len(ids))
		for i, id := range ids {
			d := time.Duration(float64(cur[i]) / ShareUnits / speed[i] * float64(time.Second))
			m.offerSeen[id] = simEpoch.Add(d + time.Millisecond)
			if i == 0 {
				m.speed = float64(adv(0, cur[0]))
				continue
			}
			peers = append(peers, Peer{ID: id, Live: true, Info: Info{Speed: adv(i, cur[i])}})
		}
		m.Step(simEpoch, ViewChanged{Peers: peers, Settled: true})
		next := m.planShares(ids, ids)
		if sum(next) != ShareUnits || len(next) != len(ids) {
			t.Fatalf("shares %v sum to %d, want %d", next, sum(next), ShareUnits)
		}
		for i := range next {
			if float64(next[i]) > float64(cur[i])*(1+maxShareChange)*1.02+2 || float64(next[i]) < float64(cur[i])*(1-maxShareChange)*0.98-2 {
				t.Errorf("share %d moved from %d to %d in one step (bound %.0f%%)", i, cur[i], next[i], 100*maxShareChange)
			}
		}
		out = append(out, next)
		cur = next
	}
	return out
}

func honest(speed []float64) func(int, uint32) uint64 {
	return func(i int, _ uint32) uint64 { return uint64(speed[i] * ShareUnits) }
}

// TestSharesFollowSpeed: trainers at relative speeds 1,1,2,4 settle on
// shares 1/8, 1/8, 1/4, 1/2 of the batch within a few steps, every share
// moving by a bounded amount per step and the total never changing.
func TestSharesFollowSpeed(t *testing.T) {
	ids := []ID{simID(0), simID(1), simID(2), simID(3)}
	speed := []float64{1, 1, 2, 4}
	steps := converge(t, ids, speed, honest(speed), 12)
	last := steps[len(steps)-1]
	for i, want := range []float64{1.0 / 8, 1.0 / 8, 1.0 / 4, 1.0 / 2} {
		if got := float64(last[i]) / ShareUnits; got < want*0.95 || got > want*1.05 {
			t.Errorf("member %d settled on %.3f of the batch, want %.3f (shares by step %v)", i, got, want, steps)
		}
	}
}

// TestLiarCappedByTimings: a member that advertises 1000x its speed gets
// no more than its timings show (within the measuring slack), not a
// thousandfold share.
func TestLiarCappedByTimings(t *testing.T) {
	ids := []ID{simID(0), simID(1), simID(2), simID(3)}
	speed := []float64{1, 1, 1, 1}
	adv := func(i int, u uint32) uint64 {
		if i == 2 {
			return 1000 * ShareUnits
		}
		return honest(speed)(i, u)
	}
	steps := converge(t, ids, speed, adv, 12)
	last := steps[len(steps)-1]
	if got := float64(last[2]) / ShareUnits; got > 0.25*speedSlack*1.05 {
		t.Errorf("liar holds %.3f of the batch, want at most %.3f (its timings are those of the others): %v", got, 0.25*speedSlack, steps)
	}
}

// TestSharesAfterLeaveAndJoin: a member missing from the ring gives its
// share to the others; a joiner starts with an equal share; the total is
// the whole batch in both cases.
func TestSharesAfterLeaveAndJoin(t *testing.T) {
	ids := []ID{simID(0), simID(1), simID(2)}
	m := planner(t, ids, []uint32{ShareUnits / 2, ShareUnits / 4, ShareUnits / 4})
	ring := ids[:2]
	next := append(slices.Clone(ring), simID(7))
	got := m.planShares(ring, next)
	if sum(got) != ShareUnits {
		t.Fatalf("shares %v sum to %d", got, sum(got))
	}
	if want := uint32(ShareUnits / 3); got[2] < want-2 || got[2] > want+2 {
		t.Errorf("joiner got %d, want the probe share %d", got[2], want)
	}
	if got[0] <= got[1] {
		t.Errorf("without timings the members keep their proportions: %v", got)
	}
}

// TestStartCarriesLinks: the attempt's all-reduce is started with the
// ring's advertised links, and a value whose links or shares do not fit
// its ring or next list is dropped.
func TestStartCarriesLinks(t *testing.T) {
	a, b := simID(0), simID(1)
	m := New(simConfig(2), a, Durable{Epoch: 1, Step: 3, List: []ID{a, b}})
	m.Step(simEpoch, SetLink{Link: Link{Egress: 100}})
	m.Step(simEpoch, ViewChanged{Settled: true, Peers: []Peer{{ID: b, Live: true, Info: Info{Link: Link{Egress: 7}}}}})
	if l := m.ringLinks([]ID{a, b}); !slices.Equal(l, []Link{{Egress: 100}, {Egress: 7}}) {
		t.Errorf("ring links %v", l)
	}
	for _, v := range []Value{
		{Attempt: Ballot{N: 1, By: b}, Ring: []ID{a, b}, Next: []ID{a, b}, Links: []Link{{Egress: 1}}},
		{Attempt: Ballot{N: 1, By: b}, Ring: []ID{a, b}, Next: []ID{a, b}, Shares: []uint32{1, 2}},
	} {
		if m.validValue(v) {
			t.Errorf("value %v accepted", v)
		}
	}
}
