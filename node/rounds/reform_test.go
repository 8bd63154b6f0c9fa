package rounds

import (
	"strings"
	"testing"
	"time"
)

// TestReformAfterMajorityGone (defect 8's last requirement): list {0,1,2}
// trains; 1 and 2 crash for good. Node 0 waits, says so and names the
// command, and decides nothing. Two new nodes cannot be admitted by it. The
// operator re-forms on node 0: it and the newcomers form a new epoch at a
// step no lower than any node 0 applied, and train. (epoch, step) pairs
// never name two results (the simulation's invariant 1 checks every
// decision).
func TestReformAfterMajorityGone(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		s := newSim(seed, 5)
		for _, nd := range s.nodes {
			nd.m.cfg.MinMembers = 3
		}
		n0 := s.nodes[0]
		var lostAt, reformAt time.Time
		var oldEpoch, lastOld uint64
		newApplies := map[ID]int{}
		s.onApply = func(nd *simNode, step uint64) {
			switch {
			case reformAt.IsZero():
				if nd == n0 {
					lastOld = step
				}
				if !lostAt.IsZero() && s.now.Sub(lostAt) > 2*time.Second {
					t.Fatalf("seed %d: %s applied step %d with the majority of its list gone", seed, nd.id, step)
				}
			default:
				if nd.m.d.Epoch <= oldEpoch {
					t.Fatalf("seed %d: %s applied step %d of epoch %d after the re-form (old epoch %d)", seed, nd.id, step, nd.m.d.Epoch, oldEpoch)
				}
				if step <= lastOld {
					t.Fatalf("seed %d: %s applied step %d in the new epoch; node 0 had applied %d", seed, nd.id, step, lastOld)
				}
				newApplies[nd.id]++
			}
		}
		script := func() {
			s.at(5*time.Second, func() {
				lostAt = s.now
				oldEpoch = n0.m.d.Epoch
				s.crash(s.nodes[1])
				s.crash(s.nodes[2])
			})
			s.at(15*time.Second, func() {
				if st, why := n0.m.State(); st != StateWaiting || !strings.Contains(why, "ringmesh reform") {
					t.Errorf("seed %d: node 0 is %s (%s); want waiting, naming ringmesh reform", seed, st, why)
				}
				reformAt = s.now
				s.step(n0, Reform{})
			})
		}
		// The newcomers' trainers start with the loss.
		runScript(t, s, map[int]time.Duration{3: 5 * time.Second, 4: 5 * time.Second}, script, 40*time.Second)
		if lastOld == 0 {
			t.Fatalf("seed %d: node 0 applied nothing before the loss", seed)
		}
		for _, i := range []int{0, 3, 4} {
			if newApplies[simID(i)] == 0 {
				t.Fatalf("seed %d: node %d applied no step of the re-formed mesh", seed, i)
			}
		}
		if testing.Verbose() {
			t.Logf("seed %d: node 0 applied up to step %d of epoch %d; re-formed as epoch %d, %d steps applied since, now at step %d",
				seed, lastOld, oldEpoch, n0.m.d.Epoch, newApplies[n0.id], n0.m.d.Step)
		}
	}
}

// TestSecondJobOnIdleNodes (issue 25 item 4): list {0,1,2} trains a job
// to its end and every trainer leaves; the nodes stay up. A second job's
// trainers join at step 0 wanting state: nobody trains to admit them, so
// the idle list is left and they form a new mesh, in a later epoch, at
// the step their state is at (0), and train.
func TestSecondJobOnIdleNodes(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		s := newSim(seed, 3)
		for _, nd := range s.nodes {
			nd.m.cfg.MinMembers = 3
		}
		var oldEpoch, oldStep uint64
		var second bool
		first := map[ID]uint64{} // the second job's first applied step
		applies := map[ID]int{}
		s.onApply = func(nd *simNode, step uint64) {
			if !second {
				return
			}
			if nd.m.d.Epoch <= oldEpoch {
				t.Fatalf("seed %d: %s applied step %d of epoch %d in the second job (the first ran in epoch %d)", seed, nd.id, step, nd.m.d.Epoch, oldEpoch)
			}
			if _, ok := first[nd.id]; !ok {
				first[nd.id] = step
			}
			applies[nd.id]++
		}
		script := func() {
			s.at(4*time.Second, func() {
				for _, nd := range s.nodes {
					nd.tr.active = false
					nd.tr.gen++
					nd.runOn = false
					s.step(nd, TrainerLeave{Reason: "trainer left"})
				}
			})
			s.at(6*time.Second, func() {
				oldEpoch, oldStep = s.nodes[0].m.d.Epoch, s.nodes[0].m.d.Step
				second = true
				for _, nd := range s.nodes {
					nd.tr.step = 0
					s.startTrainer(nd)
				}
			})
		}
		runScript(t, s, nil, script, 20*time.Second)
		if oldStep < 3 {
			t.Fatalf("seed %d: the first job reached only step %d", seed, oldStep)
		}
		for _, nd := range s.nodes {
			if applies[nd.id] == 0 {
				st, why := nd.m.State()
				t.Fatalf("seed %d: %s applied no step of the second job (it is %s: %s)", seed, nd.id, st, why)
			}
			if first[nd.id] != 0 {
				t.Errorf("seed %d: %s began the second job at step %d, want 0 (its trainer's step)", seed, nd.id, first[nd.id])
			}
		}
	}
}

// TestFirstStepWaitsForMinMembers (issue 25 item 6): a list {0,1} that
// never decided a step (formed earlier, its trainers gone) with
// MinMembers 2. Node 0's trainer comes back first, at the list's step:
// it is a member at once, but the first step waits for node 1's trainer
// instead of training alone.
func TestFirstStepWaitsForMinMembers(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		s := newSim(seed, 2)
		list := []ID{simID(0), simID(1)}
		for _, nd := range s.nodes {
			d := Durable{Epoch: 1, Step: 0, List: list}
			nd.m = New(s.nodes[0].m.cfg, nd.id, d)
			nd.m.cfg.MinMembers = 2
			nd.m.acceptHook = s.acceptHook(nd.id)
			nd.disk = d
		}
		late := 1500 * time.Millisecond // within OfferWait (2s)
		var startedAt time.Time
		var rings [][]ID
		s.onApply = func(nd *simNode, step uint64) {
			if step == 0 {
				rings = append(rings, nd.m.d.Last.Value.Ring)
				if startedAt.IsZero() || s.now.Before(startedAt) {
					t.Fatalf("seed %d: %s applied step 0 before node 1's trainer came", seed, nd.id)
				}
			}
		}
		script := func() { s.at(late, func() { startedAt = s.now }) }
		runScript(t, s, map[int]time.Duration{1: late}, script, 10*time.Second)
		if len(rings) != 2 {
			t.Fatalf("seed %d: step 0 applied by %d nodes, want 2", seed, len(rings))
		}
		for _, r := range rings {
			if len(r) != 2 {
				t.Errorf("seed %d: step 0's ring %v, want both members", seed, r)
			}
		}
	}
}

// TestReformedMinorityDoesNotEjectMajority (issue 26 defect 7): list
// {0..4} trains; node 0 is cut off and its operator re-forms it (a newer
// epoch). Once the cut heals, node 0 answers the others' messages of the
// old epoch with ahead at its newer one; the four that hold a majority
// of the list must not take that as being left out: they keep their list
// and train on in their epoch.
func TestReformedMinorityDoesNotEjectMajority(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		s := newSim(seed, 5)
		for _, nd := range s.nodes {
			nd.m.cfg.MinMembers = 3
		}
		var epoch uint64
		var healed bool
		after := map[ID]int{} // steps applied in the old epoch after the heal
		s.onApply = func(nd *simNode, step uint64) {
			if healed && nd.m.d.Epoch == epoch {
				after[nd.id]++
			}
		}
		script := func() {
			s.at(4*time.Second, func() {
				epoch = s.nodes[1].m.d.Epoch
				cutGroups(s, []int{0}, []int{1, 2, 3, 4})
				// The majority decides nothing until after the heal (its
				// trainers pause, within the trainer timeout), so node 0
				// is still in its list.
				for _, nd := range s.nodes[1:] {
					nd.tr.hungTo = s.now.Add(1800 * time.Millisecond)
				}
			})
			s.at(4200*time.Millisecond, func() {
				// Node 0 forms a mesh of its own in the new epoch.
				s.nodes[0].m.cfg.MinMembers = 1
				s.step(s.nodes[0], Reform{})
			})
			s.at(5*time.Second, func() {
				s.heal()
				healed = true
			})
		}
		runScriptEach(t, s, nil, script, 20*time.Second, func() {
			if !healed {
				return
			}
			for _, nd := range s.nodes[1:] {
				if nd.up && (nd.m.d.Epoch != epoch || !nd.m.member()) {
					st, why := nd.m.State()
					t.Fatalf("seed %d: %s left its list of epoch %d (now epoch %d, %s: %s)", seed, nd.id, epoch, nd.m.d.Epoch, st, why)
				}
			}
		})
		for _, nd := range s.nodes[1:] {
			if after[nd.id] == 0 {
				t.Fatalf("seed %d: %s applied no step of epoch %d after the heal", seed, nd.id, epoch)
			}
		}
	}
}
