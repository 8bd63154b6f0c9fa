package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/netlab"
	"github.com/ringmesh/ringmesh/internal/systest"
)

var (
	chaosFor   = flag.Duration("chaos.for", 45*time.Second, "TestLabChaos: how long faults are injected (make chaos: 10m)")
	chaosHosts = flag.Int("chaos.hosts", 5, "TestLabChaos: how many hosts (make chaos CHAOS_HOSTS=9)")
	chaosSize  = flag.Int("chaos.size", 4<<10, "TestLabChaos: float32 elements per round; from 1M (4 MiB) up, lanes take direct TCP connections (make chaos CHAOS_SIZE=2097152)")
	chaosParts = flag.Int("chaos.parts", 1, "TestLabChaos: trainers submit each round in this many parts (make chaos CHAOS_PARTS=4)")
)

// chaosLab is a namespace lab with a node process per host that can be
// killed and restarted in place.
type chaosLab struct {
	t    *testing.T
	lab  *netlab.Lab
	ps   []*systest.Proc
	args []string
	bin  string
	down map[int]bool
}

func (ln *chaosLab) kill(i int) {
	ln.ps[i].Kill()
	ln.down[i] = true
}

// restart starts host i's node again on its data dir, joining through every
// other node that is up.
func (ln *chaosLab) restart(i int) *systest.Proc {
	ln.t.Helper()
	a := append([]string{"--listen", ln.lab.Host(i).TCPMultiaddr(0)}, ln.args...)
	for j, p := range ln.ps {
		if j != i && !ln.down[j] {
			a = append(a, "--join", p.Addr)
		}
	}
	p, err := systest.StartCmd([]string{"ip", "netns", "exec", ln.lab.Host(i).Netns}, ln.bin, ln.ps[i].Dir, a...)
	if err != nil {
		ln.t.Fatalf("restart node %d: %v", i, err)
	}
	ln.t.Cleanup(func() { p.Stop(10 * time.Second) })
	ln.ps[i] = p
	delete(ln.down, i)
	return p
}

// TestLabChaos is the chaos test of the rounds issue: 5 hosts
// (-chaos.hosts) in network namespaces train with trainers whose every
// result is checkable (each member contributes integers derived from its
// ID and the step, summed exactly, and each trainer checks the sum of its
// ring); for -chaos.for (make chaos: minutes) one fault at a time,
// sometimes two overlapping, is injected at random: a node SIGKILLed and
// restarted on its data dir, a host cut off from all others, a
// majority|minority split (3|2 of 5), such a split with a node of the
// majority killed. Afterwards every applied step matches across members,
// no trainer applies a step twice or skips one, and once all is healed
// the mesh trains with every host again.
func TestLabChaos(t *testing.T) {
	netlab.Require(t)
	n := *chaosHosts
	if n < 3 {
		t.Fatalf("-chaos.hosts %d: want at least 3", n)
	}
	lab := netlab.New(t, n, netlab.DefaultConfig())
	root := t.TempDir()
	dumpLogsOnFailure(t, root)
	args := []string{"--no-mdns", "--no-dht", "--fast-detect", "--min-members", fmt.Sprint(n), "--log-level", "debug"}
	ln := &chaosLab{t: t, lab: lab, args: args, bin: systest.Binary(t), down: map[int]bool{}}
	ln.ps = systest.LabCluster(t, lab, root, n, args...)
	ctx, cancel := context.WithTimeout(context.Background(), *chaosFor+5*time.Minute)
	defer cancel()
	tctx, stop := context.WithCancel(ctx)
	tr := &trainers{t: t, ctx: tctx, led: newLedger(), size: *chaosSize, parts: *chaosParts, steps: 1 << 40, exact: true, killed: map[string]bool{}}
	runs := make([]string, n)
	for i, p := range ln.ps {
		runs[i] = tr.start(p)
	}
	tr.waitRound("start", n)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 15))
	t.Logf("chaos for %s, seed %d, %d hosts, rounds of %d elements in %d parts", *chaosFor, seed, n, *chaosSize, max(*chaosParts, 1))
	hold := func(lo, hi time.Duration) { time.Sleep(lo + time.Duration(rng.Int64N(int64(hi-lo)))) }
	kill := func(i int) {
		tr.mu.Lock()
		tr.killed[runs[i]] = true
		tr.mu.Unlock()
		ln.kill(i)
	}
	restart := func(i int) { runs[i] = tr.start(ln.restart(i)) }
	split := func() ([]int, []int) {
		perm := rng.Perm(n)
		a, b := perm[:n/2+1], perm[n/2+1:]
		slices.Sort(a)
		slices.Sort(b)
		return a, b
	}
	faults := map[string]int{}
	end := time.Now().Add(*chaosFor)
	for time.Now().Before(end) {
		switch f := rng.IntN(4); f {
		case 0:
			i := rng.IntN(n)
			t.Logf("fault: kill node %d", i)
			kill(i)
			hold(200*time.Millisecond, 3*time.Second)
			restart(i)
			faults["kill"]++
		case 1:
			i := rng.IntN(n)
			var others []int
			for j := range n {
				if j != i {
					others = append(others, j)
				}
			}
			t.Logf("fault: isolate host %d", i)
			lab.Partition(others)
			hold(time.Second, 6*time.Second)
			lab.HealAll()
			faults["isolate"]++
		case 2:
			a, b := split()
			t.Logf("fault: split %v | %v", a, b)
			lab.Partition(a, b)
			hold(time.Second, 8*time.Second)
			lab.HealAll()
			faults["split"]++
		case 3:
			// Overlapping: a node of the majority side dies during the
			// split; nobody has a majority until it is back or healed.
			a, b := split()
			i := a[rng.IntN(len(a))]
			t.Logf("fault: split %v | %v, kill node %d", a, b, i)
			lab.Partition(a, b)
			hold(500*time.Millisecond, 3*time.Second)
			kill(i)
			hold(500*time.Millisecond, 3*time.Second)
			lab.HealAll()
			restart(i)
			faults["split+kill"]++
		}
		hold(500*time.Millisecond, 4*time.Second)
	}
	healed := time.Now()
	tr.waitRound(fmt.Sprintf("all %d after the last heal", n), n)
	t.Logf("after the last heal, a %d-member round in %s", n, time.Since(healed).Round(time.Millisecond))
	stop()
	tr.wg.Wait()
	steps := tr.led.check(t)
	t.Logf("faults %v; %d steps applied, %d trainer runs, every result the exact sum of its ring", faults, steps, len(tr.led.runs))
	// A part's lane of at least 1 MiB (allreduce's DirectMinBytes) runs on
	// its own TCP connection: then every node, restarted or not, took part
	// in the last all-member round over direct lanes.
	direct := 4*(*chaosSize)/max(*chaosParts, 1)/2 >= 1<<20
	for i := range n {
		st, err := systest.Status(ln.ps[i].Dir)
		if err != nil {
			t.Errorf("node %d: status: %v", i, err)
			continue
		}
		t.Logf("node %d (%s): epoch %d, rounds %s, dropped %v, lanes %+v", i, filepath.Base(ln.ps[i].Dir), st.Rounds.Epoch, st.Rounds.State, st.Rounds.Dropped, st.Lanes)
		if direct && st.Lanes.Direct == 0 {
			t.Errorf("node %d: no direct lane with rounds of %d elements in %d parts", i, *chaosSize, max(*chaosParts, 1))
		}
	}
}
