package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/netlab"
	"github.com/ringmesh/ringmesh/internal/systest"
)

// TestLabPartitionMajorityOnly is the split-brain test of the rounds issue:
// 5 hosts in network namespaces train; the links are cut 3 | 2; the 3 keep
// training, the 2 report that they wait (not in the majority) and apply
// nothing; after the heal all 5 train again and every applied round agrees.
func TestLabPartitionMajorityOnly(t *testing.T) {
	netlab.Require(t)
	lab := netlab.New(t, 5, netlab.DefaultConfig())
	root := t.TempDir()
	dumpLogsOnFailure(t, root)
	ps := systest.LabCluster(t, lab, root, 5, "--no-mdns", "--no-dht", "--fast-detect", "--min-members", "5", "--log-level", "debug")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tctx, stop := context.WithCancel(ctx)
	tr := &trainers{t: t, ctx: tctx, led: newLedger(), size: 16 << 10, steps: 1 << 40, killed: map[string]bool{}}
	runs := make([]string, 5)
	for i, p := range ps {
		runs[i] = tr.start(p)
	}
	tr.waitRound("start", 5)

	lab.Partition([]int{0, 1, 2}, []int{3, 4})
	cut := time.Now()
	tr.waitRound("majority after the cut", 3)
	for _, i := range []int{3, 4} {
		systest.Eventually(t, time.Minute, func() error {
			st, err := systest.Status(ps[i].Dir)
			if err != nil {
				return err
			}
			if st.Rounds.State != "waiting" || !strings.Contains(st.Rounds.Reason, "majority") {
				return fmt.Errorf("node %d: rounds %s (%s), want waiting: not in the majority", i, st.Rounds.State, st.Rounds.Reason)
			}
			return nil
		})
	}
	time.Sleep(2 * time.Second) // the majority trains on; the minority must not
	tr.waitRound("majority still training", 3)
	lab.HealAll()
	healed := time.Now()
	for _, i := range []int{3, 4} {
		// A round of the minority may complete just after the cut, before
		// failure detection: nothing after the first 2s.
		if n := tr.led.appliedBetween(runs[i], cut.Add(2*time.Second), healed); n != 0 {
			t.Errorf("node %d applied %d rounds while cut off from the majority", i, n)
		}
	}
	tr.waitRound("all five after the heal", 5)
	stop()
	tr.wg.Wait()
	steps := tr.led.check(t)
	t.Logf("%d steps applied; partition at %s, heal at %s", steps, cut.Format(time.StampMilli), healed.Format(time.StampMilli))
}

// TestLabSplitWithPendingJoiners is defect 1 of the rounds issue on real
// processes: list {A,B,C} trains, two new nodes J1 and J2 ask to join, and
// while their joins are pending (at a random moment, so some trials land in
// the commit window that admits them) the network splits {leader,J1,J2} |
// {the other two}. At most one side may train: no step is applied on both
// sides while split, and every step anyone applied agrees (ledger.check).
func TestLabSplitWithPendingJoiners(t *testing.T) {
	netlab.Require(t)
	trials := 4
	if testing.Short() {
		trials = 1
	}
	lab := netlab.New(t, 5, netlab.DefaultConfig())
	root := t.TempDir()
	dumpLogsOnFailure(t, root)
	args := []string{"--no-mdns", "--no-dht", "--fast-detect", "--min-members", "3", "--log-level", "debug"}
	ps := systest.LabCluster(t, lab, root, 3, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	tctx, stop := context.WithCancel(ctx)
	tr := &trainers{t: t, ctx: tctx, led: newLedger(), size: 4 << 10, steps: 1 << 40, exact: true, killed: map[string]bool{}}
	runs := map[int]string{}
	for i, p := range ps {
		runs[i] = tr.start(p)
	}
	tr.waitRound("start", 3)
	// The leader of a step is the lowest ID of the list that offered.
	leader := 0
	for i := range ps {
		if ps[i].ID < ps[leader].ID {
			leader = i
		}
	}
	var others []int
	for i := range 3 {
		if i != leader {
			others = append(others, i)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	joiners := []int{3, 4}
	trained := map[string]int{}
	for trial := range trials {
		js := make([]*systest.Proc, 2)
		for k, i := range joiners {
			h := lab.Host(i)
			a := append([]string{"--listen", h.TCPMultiaddr(0), "--join", ps[leader].Addr}, args...)
			p, err := systest.StartCmd([]string{"ip", "netns", "exec", h.Netns}, systest.Binary(t), filepath.Join(root, fmt.Sprintf("j%d-%d", trial, i)), a...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Stop(10 * time.Second) })
			js[k] = p
			runs[i] = tr.start(p)
		}
		delay := time.Duration(rng.IntN(700)) * time.Millisecond
		time.Sleep(delay)
		sideA, sideB := append([]int{leader}, joiners...), others
		lab.Partition(sideA, sideB)
		cut := time.Now()
		time.Sleep(6 * time.Second)
		lab.HealAll()
		healed := time.Now()
		// A step decided before the cut may reach a member a moment later:
		// count from 2s after it.
		a := tr.led.stepsBetween(runsOf(runs, sideA), cut.Add(2*time.Second), healed)
		b := tr.led.stepsBetween(runsOf(runs, sideB), cut.Add(2*time.Second), healed)
		both := 0
		for k := range a {
			if b[k] {
				both++
			}
		}
		if both > 0 {
			t.Errorf("trial %d: %d steps applied on both sides of the split", trial, both)
		}
		side := "neither"
		switch {
		case len(a) > 0 && len(b) == 0:
			side = "leader+joiners"
		case len(b) > 0 && len(a) == 0:
			side = "the other two"
		}
		trained[side]++
		t.Logf("trial %d: split %s after the joiners started; %d steps on {leader,J1,J2}, %d on the other two", trial, delay, len(a), len(b))
		tr.waitRound(fmt.Sprintf("trial %d: all five after the heal", trial), 5)
		for k, i := range joiners {
			tr.mu.Lock()
			tr.killed[runs[i]] = true
			tr.mu.Unlock()
			js[k].Kill()
		}
		tr.waitRound(fmt.Sprintf("trial %d: the three after the joiners left", trial), 3)
	}
	stop()
	tr.wg.Wait()
	steps := tr.led.check(t)
	t.Logf("%d trials (side that trained while split: %v), %d steps applied", trials, trained, steps)
}

func runsOf(runs map[int]string, hosts []int) []string {
	var out []string
	for _, i := range hosts {
		out = append(out, runs[i])
	}
	return out
}
