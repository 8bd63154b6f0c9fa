package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/netlab"
	"github.com/ringmesh/ringmesh/internal/systest"
	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// TestLabRoundLongerThanCommitTimeout: a round whose all-reduce takes
// longer than --commit-timeout completes, because the all-reduce phase is
// bounded by its progress, not its length (issue 26, defect 0: every
// attempt used to be aborted at the timeout and retried forever). Three
// lab hosts at 100 Mbit/s reduce 32 MiB (about 3.6 s of line time per
// host) under a 2 s commit timeout; the test checks that the round really
// outlasted the timeout, so it cannot pass by the link being fast.
func TestLabRoundLongerThanCommitTimeout(t *testing.T) {
	const (
		n             = 3
		elems         = 8 << 20 // 32 MiB of float32
		commitTimeout = 2 * time.Second
	)
	lab := netlab.New(t, n, netlab.DefaultConfig())
	for i := range n {
		lab.SetRate(i, 100e6)
	}
	root := t.TempDir()
	ps := systest.LabCluster(t, lab, root, n, "--no-mdns", "--no-dht", "--min-members", fmt.Sprint(n),
		"--commit-timeout", commitTimeout.String())
	dumpLogsOnFailure(t, root)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bufs, step := joinedTrainers(t, ctx, ps, elems)
	for i, buf := range bufs {
		for j := range buf.Data {
			buf.Data[j] = float32(i + 1)
		}
	}
	start := time.Now()
	resps := make([]localapi.Response, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, buf := range bufs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resps[i], errs[i] = buf.AllReduce(ctx, step, client.ReduceOptions{Reduce: "sum"})
		}()
	}
	wg.Wait()
	took := time.Since(start)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("trainer %d: %v (after %v; a round longer than the %v commit timeout must complete)", i, err, took, commitTimeout)
		}
	}
	if took <= commitTimeout {
		t.Fatalf("the round took %v, not longer than the %v commit timeout: the lab's 100 Mbit/s limit did not hold, so this run proves nothing", took, commitTimeout)
	}
	const want = 1 + 2 + 3
	for i, buf := range bufs {
		for _, j := range []int{0, elems / 2, elems - 1} {
			if buf.Data[j] != want {
				t.Fatalf("trainer %d: element %d is %v, want %v", i, j, buf.Data[j], float32(want))
			}
		}
	}
	t.Logf("a %d MiB round over %d hosts at 100 Mbit/s took %v under a %v commit timeout, %d attempt(s)",
		elems*4>>20, n, took.Round(time.Millisecond), commitTimeout, resps[0].Attempts)
}
