package main

import (
	"context"
	"fmt"
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
	waitRounds := func(what string, members int) {
		since := time.Now()
		systest.Eventually(t, 2*time.Minute, func() error {
			if tr.led.since(since, members) {
				return nil
			}
			return fmt.Errorf("%s: no round with %d members applied", what, members)
		})
	}
	waitRounds("start", 5)

	lab.Partition([]int{0, 1, 2}, []int{3, 4})
	cut := time.Now()
	waitRounds("majority after the cut", 3)
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
	waitRounds("majority still training", 3)
	lab.HealAll()
	healed := time.Now()
	for _, i := range []int{3, 4} {
		// A round of the minority may complete just after the cut, before
		// failure detection: nothing after the first 2s.
		if n := tr.led.appliedBetween(runs[i], cut.Add(2*time.Second), healed); n != 0 {
			t.Errorf("node %d applied %d rounds while cut off from the majority", i, n)
		}
	}
	waitRounds("all five after the heal", 5)
	stop()
	tr.wg.Wait()
	steps := tr.led.check(t)
	t.Logf("%d steps applied; partition at %s, heal at %s", steps, cut.Format(time.StampMilli), healed.Format(time.StampMilli))
}
