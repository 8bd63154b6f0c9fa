package rounds

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestResyncJoinsAsAJoiner (issue 25 item 2): a member whose trainer's
// state diverged from the mesh's (a state check said so) joins again with
// Resync at the list's own step, between two steps. It is not made a
// member at once with the state it holds (what a join at the list's step
// does): it is admitted at a later step as a joiner, outside the ring of
// the step before its entry (so that ring's leader is told to save the
// entry step's checkpoint, which the trainer loads), in a list that names
// it, and trains on from there. The simulation's invariants hold
// throughout, with duplicated and lost messages.
func TestResyncJoinsAsAJoiner(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			n := 3 + int(seed%3)
			s := newSim(seed, n)
			s.dupP = 0.1
			if seed%3 == 0 {
				s.dropP = 0.05
			}
			j := s.rng.IntN(n)
			jd := s.byID[simID(j)]
			at := s.dur(1500*time.Millisecond, 2500*time.Millisecond)
			var (
				resynced, admitted bool
				from, entry, epoch uint64
				appliedAfter       int
				bad                string
			)
			s.onApply = func(nd *simNode, k uint64) {
				if nd == jd && admitted {
					appliedAfter++
				}
			}
			var resync func()
			resync = func() {
				tr := &jd.tr
				if !jd.up || !tr.active || !tr.member || tr.pending || !jd.m.member() || jd.m.d.Step != tr.step {
					s.at(time.Millisecond, resync) // between two steps, as the Python helper does
					return
				}
				resynced, from = true, tr.step
				jd.tr = simTrainer{active: true, gen: tr.gen + 1, step: tr.step}
				jd.runOn = false
				s.step(jd, TrainerJoin{StartStep: from, NeedState: true, Resync: true})
			}
			each := func() {
				if !resynced || admitted || bad != "" || !jd.runOn {
					return
				}
				admitted, entry, epoch = true, jd.runNext, jd.tr.epoch
				d, ok := s.decisions[[2]uint64{epoch, entry - 1}]
				switch {
				case entry <= from:
					bad = fmt.Sprintf("admitted at step %d with the state it held at step %d", entry, from)
				case !ok:
					bad = fmt.Sprintf("admitted at step %d of epoch %d, whose list was not decided", entry, epoch)
				case slices.Contains(d.value.Ring, jd.id):
					bad = fmt.Sprintf("admitted at step %d; it was in the ring of step %d (%v): not a joiner, nobody saves its state", entry, entry-1, d.value.Ring)
				case !slices.Contains(d.value.Next, jd.id):
					bad = fmt.Sprintf("admitted at step %d, whose list %v does not name it", entry, d.value.Next)
				}
			}
			runScriptEach(t, s, nil, func() { s.at(at, resync) }, 15*time.Second, each)
			switch {
			case bad != "":
				t.Fatalf("seed %d (%d nodes, resync of %s at %v): %s", seed, n, jd.id, at, bad)
			case !resynced:
				t.Fatalf("seed %d: %s never got between two steps to resync", seed, jd.id)
			case !admitted:
				st, why := jd.m.State()
				t.Fatalf("seed %d: %s never admitted after its resync at step %d (%s: %s)", seed, jd.id, from, st, why)
			case appliedAfter == 0:
				t.Fatalf("seed %d: %s admitted at step %d after its resync but applied nothing", seed, jd.id, entry)
			}
		})
	}
}

// TestResyncUnderFaults: trainers that resync at random moments, amid
// crashes, partitions, lost and duplicated messages, slow, hung and
// leaving trainers: the simulation's invariants hold after every event,
// and once the faults stop every node applies steps again.
func TestResyncUnderFaults(t *testing.T) {
	for seed := uint64(1); seed <= 300; seed++ {
		s := newSim(seed, 3+int(seed%5))
		for range 4 {
			nd := s.nodes[s.rng.IntN(len(s.nodes))]
			var resync func()
			tries := 0
			resync = func() {
				tr := &nd.tr
				if !nd.up || !tr.active || !tr.member || tr.pending {
					if tries++; tries < 200 {
						s.at(5*time.Millisecond, resync)
					}
					return
				}
				s.logf("%s trainer resyncs at step %d", nd.id, tr.step)
				nd.tr = simTrainer{active: true, gen: tr.gen + 1, step: tr.step, slow: tr.slow, hungTo: tr.hungTo}
				nd.runOn = false
				s.step(nd, TrainerJoin{StartStep: nd.tr.step, NeedState: true, Resync: true})
			}
			s.at(s.dur(300*time.Millisecond, 7*time.Second), resync)
		}
		if err := s.run(8*time.Second, 20*time.Second); err != nil {
			t.Fatalf("seed %d (%d nodes): %v", seed, len(s.nodes), err)
		}
	}
}
