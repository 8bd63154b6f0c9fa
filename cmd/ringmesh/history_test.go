package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/systest"
	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// TestCheckpointsOnlyFromHistory: in a training mesh, a member announcing a
// checkpoint at step 2^64-1, and a credentialed node outside the agreed
// list announcing one at a real step, are both ignored by the members:
// checkpoint ls leaves them out, get --latest fetches the real newest
// checkpoint. ls --all shows that their announcements did arrive.
func TestCheckpointsOnlyFromHistory(t *testing.T) {
	root := t.TempDir()
	dumpLogsOnFailure(t, root)
	ps := systest.Cluster(t, root, 2, "--min-members", "2")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tctx, stop := context.WithCancel(ctx)
	defer stop()
	tr := &trainers{t: t, ctx: tctx, led: newLedger(), size: 1000, steps: 1 << 40, killed: map[string]bool{}}
	for _, p := range ps {
		tr.start(p)
	}
	tr.waitRound("start", 2)
	a, b := ps[0], ps[1]
	st, err := systest.Status(a.Dir)
	if err != nil {
		t.Fatal(err)
	}
	realStep := st.Rounds.NextStep - 1
	real := saveRoot(t, a.Dir, realStep, writeRandomFileAt(t, root, "real"))
	fake := saveRoot(t, a.Dir, 1<<64-1, writeRandomFileAt(t, root, "fake"))
	// A credentialed node that never trained: in no agreed list.
	outsider := systest.Start(t, filepath.Join(root, "outsider"), "--join", a.Addr)
	foreign := saveRoot(t, outsider.Dir, realStep+1, writeRandomFileAt(t, root, "foreign"))

	systest.Eventually(t, time.Minute, func() error {
		resp, err := listAllOn(ctx, b.Dir)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, c := range resp.Checkpoints {
			seen[c.Root] = true
		}
		if !seen[real] || !seen[fake] || !seen[foreign] {
			return fmt.Errorf("b has not heard all three announcements yet")
		}
		return nil
	})
	resp, err := listOn(b.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.Checkpoints {
		if c.Root == fake || c.Root == foreign {
			t.Errorf("b lists %s (step %d, run %q): not from the agreed history", c.Root[:12], c.Step, c.RunID)
		}
	}
	r := getJSON(t, "--data-dir", b.Dir, "--latest", "-o", filepath.Join(root, "latest"))
	if r.Checkpoint.Root != real {
		t.Fatalf("b's get --latest fetched %s (step %d); want the real checkpoint %s of step %d", r.Checkpoint.Root[:12], r.Checkpoint.Step, real[:12], realStep)
	}
}

func writeRandomFileAt(t *testing.T, dir, name string) string {
	p := filepath.Join(dir, name)
	writeRandomFile(t, p, 4096)
	return p
}

func listAllOn(ctx context.Context, dir string) (localapi.Response, error) {
	c, err := client.Dial(ctx, dir)
	if err != nil {
		return localapi.Response{}, err
	}
	defer c.Close()
	return c.Call(ctx, localapi.Request{Op: localapi.OpCheckpointList, All: true})
}
