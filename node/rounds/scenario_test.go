package rounds

import (
	"container/heap"
	"math"
	"slices"
	"testing"
	"time"
)

// Scripted scenarios for the defects the protocol was rebuilt to close.
// They run on the simulation's network and check its invariants after
// every event, plus what each scenario is about.

// runScript plays a scripted schedule: script schedules the faults (and
// stopFaults); trainers start at the times in start (absent: at 0).
func runScript(t *testing.T, s *Sim, start map[int]time.Duration, script func(), until time.Duration) {
	t.Helper()
	s.faulty = true
	for i, nd := range s.nodes {
		s.at(start[i], func() { s.startTrainer(nd) })
	}
	s.at(0, s.tick)
	s.at(0, s.viewTick)
	script()
	end := simEpoch.Add(until)
	for s.q.Len() > 0 && s.err == nil {
		e := popEvent(s)
		if e.at.After(end) {
			break
		}
		s.now = e.at
		e.fn()
	}
	if s.err != nil {
		t.Fatal(s.err)
	}
}

func cutGroups(s *Sim, a, b []int) {
	for _, x := range a {
		for _, y := range b {
			s.cut[[2]ID{simID(x), simID(y)}], s.cut[[2]ID{simID(y), simID(x)}] = true, true
		}
	}
	for _, x := range append(slices.Clone(a), b...) {
		s.crashReduces(simID(x))
	}
}

// TestSplitInCommitWindowWithJoiners (defect 1): list {0,1,2}, joiners 3
// and 4 pending; the network splits {leader,3,4} | {the other two} right
// as the leader sends the commit that admits the joiners. Never may both
// sides apply steps: the two sides' applied steps after the split must be
// disjoint and agree with one history.
func TestSplitInCommitWindowWithJoiners(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		s := newSim(seed, 5)
		s.nodes[0].m.cfg.MinMembers, s.nodes[1].m.cfg.MinMembers, s.nodes[2].m.cfg.MinMembers = 3, 3, 3
		var splitAt time.Time
		var splitStep uint64
		var sides [2][]int
		s.onSend = func(m Message) {
			if !splitAt.IsZero() || m.Type != MsgCommit || m.Value == nil || len(m.Value.Next) != 5 {
				return
			}
			leader := int(m.From[1] - '0')
			var other []int
			for i := range 3 {
				if i != leader {
					other = append(other, i)
				}
			}
			sides = [2][]int{{leader, 3, 4}, other}
			cutGroups(s, sides[0], sides[1])
			splitAt, splitStep = s.now, m.Step
			s.at(3*time.Second, func() { s.stopFaults() })
		}
		applied := map[int]map[uint64]bool{}
		s.onApply = func(nd *simNode, step uint64) {
			// The step being committed may be applied on both sides: its
			// value was accepted by a majority, so the side without the
			// leader proposes the same value. No later step may be.
			if splitAt.IsZero() || step <= splitStep || s.now.Sub(splitAt) > 3*time.Second {
				return
			}
			i := int(nd.id[1] - '0')
			if applied[i] == nil {
				applied[i] = map[uint64]bool{}
			}
			applied[i][step] = true
		}
		runScript(t, s, map[int]time.Duration{3: time.Second, 4: time.Second}, func() {}, 20*time.Second)
		if splitAt.IsZero() {
			t.Fatalf("seed %d: no commit admitted both joiners", seed)
		}
		for _, a := range sides[0] {
			for _, b := range sides[1] {
				for k := range applied[a] {
					if applied[b][k] {
						t.Fatalf("seed %d: step %d applied on both sides of the split (%d and %d)", seed, k, a, b)
					}
				}
			}
		}
		trained := 0
		for _, side := range sides {
			for _, i := range side {
				if len(applied[i]) > 0 {
					trained++
					break
				}
			}
		}
		if trained > 1 {
			t.Fatalf("seed %d: both sides trained during the split: %v", seed, applied)
		}
	}
}

// TestHeartbeatClaimsChangeNothing (defect 5): a heartbeat that claims to
// train at step 2^64-1 with another list, and one of a newer epoch, leave a
// member's list, step and state as they are.
func TestHeartbeatClaimsChangeNothing(t *testing.T) {
	cfg := simConfig(2)
	cfg.TrainerTimeout = 0 // this trainer never submits
	now := simEpoch
	a, b := simID(0), simID(1)
	m := New(cfg, a, Durable{Epoch: 1, Step: 7, List: []ID{a, b}})
	m.Step(now, TrainerJoin{StartStep: 7})
	m.Step(now, ViewChanged{Settled: true, Peers: []Peer{{ID: b, Live: true, Info: Info{State: StateTraining, Epoch: 1, Step: 7, List: listHash([]ID{a, b})}}}})
	m.Step(now, Tick{})
	for _, hostile := range []Info{
		{State: StateTraining, Epoch: 1, Step: math.MaxUint64, List: "ffffffffffff"},
		{State: StateTraining, Epoch: math.MaxUint64, Step: math.MaxUint64},
		{State: StateForming, Epoch: 1, Step: math.MaxUint64},
	} {
		now = now.Add(time.Second)
		m.Step(now, ViewChanged{Settled: true, Peers: []Peer{{ID: b, Live: true, Info: hostile}, {ID: simID(9), Live: true, Info: hostile}}})
		m.Step(now, Tick{})
		if e, k, l := m.NextStep(); e != 1 || k != 7 || !slices.Equal(l, []ID{a, b}) {
			t.Fatalf("after heartbeat %+v: epoch %d step %d list %v, want epoch 1 step 7 list [a b]", hostile, e, k, l)
		}
		if st, _ := m.State(); st != StateTraining {
			t.Fatalf("after heartbeat %+v: state %s, want training", hostile, st)
		}
	}
}

// TestMessagesOutsideTheirRole (defect 4): a ready from outside the
// attempt's ring, a commit and a prepare from outside the list, and an
// accept for someone else's ballot are dropped and counted.
func TestMessagesOutsideTheirRole(t *testing.T) {
	cfg := simConfig(3)
	now := simEpoch
	a, b, c, x := simID(0), simID(1), simID(2), simID(9)
	list := []ID{a, b, c}
	m := New(cfg, a, Durable{Epoch: 1, Step: 3, List: list})
	m.Step(now, TrainerJoin{StartStep: 3})
	m.Step(now, ViewChanged{Settled: true, Peers: []Peer{{ID: b, Live: true}, {ID: c, Live: true}}})
	v := &Value{Attempt: Ballot{N: 5, By: b}, Ring: []ID{a, b, c}, Next: []ID{a, b, c, x}}
	for _, msg := range []Message{
		{Type: MsgCommit, From: x, Epoch: 1, Step: 3, Value: v},
		{Type: MsgPrepare, From: x, Epoch: 1, Step: 3, Ballot: Ballot{N: 9, By: x}},
		{Type: MsgAccept, From: c, Epoch: 1, Step: 3, Ballot: Ballot{N: 5, By: b}, Value: v},
		{Type: MsgReady, From: x, Epoch: 1, Step: 3, Ballot: Ballot{N: 1, By: a}},
		{Type: MsgStart, From: c, Epoch: 1, Step: 3, Ballot: Ballot{N: 5, By: b}, Value: v},
	} {
		before := total(m.Dropped)
		msg.To = a
		fx := m.Step(now, Recv{Msg: msg})
		if total(m.Dropped) != before+1 {
			t.Errorf("%s from %s: not dropped (dropped %v)", msg.Type, msg.From, m.Dropped)
		}
		for _, e := range fx {
			switch e.(type) {
			case Send, Apply, StartReduce, Persist:
				t.Errorf("%s from %s: acted on: %#v", msg.Type, msg.From, e)
			}
		}
		if _, k, l := m.NextStep(); k != 3 || !slices.Equal(l, list) {
			t.Fatalf("%s from %s moved the node to step %d list %v", msg.Type, msg.From, k, l)
		}
	}
}

func total(m map[string]uint64) (n uint64) {
	for _, v := range m {
		n += v
	}
	return n
}

// TestRestartedMajorityKeepsHistory (defect 8): the list shrinks to
// {0,1,2} while 3 and 4 are down; then 1 and 2 are killed and restarted.
// With everyone up again, the mesh trains on from where it was: no node
// ever goes back to a lower step (the simulation checks every persisted
// state) and every node applies new steps.
func TestRestartedMajorityKeepsHistory(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		s := newSim(seed, 5)
		var before uint64
		runScript(t, s, nil, func() {
			s.at(time.Second, func() { s.crash(s.nodes[3]); s.crash(s.nodes[4]) })
			s.at(3*time.Second, func() {
				before = s.nodes[0].m.d.Step
				s.crash(s.nodes[1])
				s.crash(s.nodes[2])
			})
			s.at(4*time.Second, func() { s.restart(s.nodes[1]); s.restart(s.nodes[2]) })
			s.at(5*time.Second, func() { s.stopFaults() })
		}, 30*time.Second)
		if before < 2 {
			t.Fatalf("seed %d: only %d steps before the kills", seed, before)
		}
		for _, nd := range s.nodes {
			if _, ok := s.progress[nd.id]; !ok {
				st, why := nd.m.State()
				t.Fatalf("seed %d: %s applied nothing after the faults stopped (%s: %s, step %d)", seed, nd.id, st, why, nd.m.d.Step)
			}
			if nd.m.d.Step <= before {
				t.Fatalf("seed %d: %s is at step %d, not past the %d of before the restarts", seed, nd.id, nd.m.d.Step, before)
			}
		}
	}
}

func popEvent(s *Sim) *simEvent { return heap.Pop(&s.q).(*simEvent) }
