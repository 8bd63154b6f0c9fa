package meshtrain

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ringmesh/ringmesh/internal/systest"
)

// TestDiLoCoOnNodes is DiLoCo on a real mesh: 3 `ringmesh node` processes
// with a trainer each, H = 4 inner steps per round on the parts of the
// global batch that the mesh's shares name, float32 wire. Every member
// ends with bit-identical state (theta_global, outer momentum, outer step)
// and with the theta_global of the same schedule, over the same parts, run
// in one process (within float32 tolerance: the ring sums in another
// order).
func TestDiLoCoOnNodes(t *testing.T) {
	const members = 3
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last, after the nodes stop
	root := t.TempDir()
	logsOnFailure(t, root)
	ps := systest.Cluster(t, root, members, "--min-members", "3")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	cfg := LocalConfig()
	cfg.SyncEvery, cfg.Steps, cfg.GlobalBatch, cfg.CheckpointEvery, cfg.Wire = 4, 8, 31, 4, "float32"
	var mu sync.Mutex
	parts := make([][][2]int, cfg.Steps) // by outer step, by member
	for k := range parts {
		parts[k] = make([][2]int, members)
	}
	results := make([]Result, members)
	errs := make([]error, members)
	var wg sync.WaitGroup
	for i, p := range ps {
		c := cfg
		c.DataDir = p.Dir
		c.OnStep = func(s StepInfo) {
			mu.Lock()
			defer mu.Unlock()
			parts[s.Step][i] = s.Part
			if s.TotalWeight != float64(cfg.SyncEvery)*float64(cfg.GlobalBatch) || s.Samples != int(cfg.SyncEvery)*(s.Part[1]-s.Part[0]) {
				t.Errorf("trainer %d step %d: %d samples of %v, part %v; want H*part of H*B = %d",
					i, s.Step, s.Samples, s.TotalWeight, s.Part, int(cfg.SyncEvery)*cfg.GlobalBatch)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = Run(ctx, c)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("trainer %d: %v", i, errs[i])
		}
		if r.Applied != int(cfg.Steps) || r.Joins != 1 || !r.Synced || r.Trainer.Step() != cfg.Steps {
			t.Errorf("trainer %d: applied %d, joins %d, synced %v, at step %d; want %d, 1, true, %d",
				i, r.Applied, r.Joins, r.Synced, r.Trainer.Step(), cfg.Steps, cfg.Steps)
		}
		if got, want := r.Trainer.ParamHash(), results[0].Trainer.ParamHash(); got != want {
			t.Errorf("trainer %d: theta_global hash %.16s, trainer 0 has %.16s", i, got, want)
		}
		if !bytes.Equal(r.Trainer.MarshalState(), results[0].Trainer.MarshalState()) {
			t.Errorf("trainer %d: state bytes differ from trainer 0's", i)
		}
	}
	ref := dilocoReference(t, cfg, parts)
	d := maxDiff(results[0].Trainer.GlobalParams(), ref.GlobalParams())
	if d > 1e-4 {
		t.Errorf("max |theta_global - the schedule's in one process| = %g, want <= 1e-4", d)
	}
	t.Logf("%d members, H=%d, batch %d, %d outer steps: parts of the last step %v, max |theta_global difference| %.3g",
		members, cfg.SyncEvery, cfg.GlobalBatch, cfg.Steps, parts[cfg.Steps-1], d)
}

// logsOnFailure logs the tail of each node's log when the test fails.
func logsOnFailure(t *testing.T, root string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		logs, _ := filepath.Glob(filepath.Join(root, "*", "node-*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			t.Logf("=== %s\n%s", l, b[max(0, len(b)-8000):])
		}
	})
}
