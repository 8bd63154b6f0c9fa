package main

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ringmesh/ringmesh/internal/systest"
	"github.com/ringmesh/ringmesh/train"
	"github.com/ringmesh/ringmesh/train/meshtrain"
)

// TestMeshTrainingEquivalence is the proof that the mesh trains correctly:
// 4 node processes with a Go trainer each, global batch B split by rank and
// averaged by weighted mean through the ring all-reduce, end with the
// parameters of 1 in-process trainer that takes the whole batch B over the
// same data order (within float32 tolerance), and bit-identical to each
// other.
func TestMeshTrainingEquivalence(t *testing.T) {
	const (
		members = 4
		steps   = 60
		batch   = 61 // not a multiple of 4: shards of 16 and 15
	)
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last, after the nodes stop
	root := t.TempDir()
	dumpLogsOnFailure(t, root)
	ps := systest.Cluster(t, root, members, "--min-members", "4")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	results := make([]meshtrain.Result, members)
	errs := make([]error, members)
	var wg sync.WaitGroup
	for i, p := range ps {
		cfg := meshtrain.LocalConfig()
		cfg.DataDir, cfg.Steps, cfg.GlobalBatch, cfg.CheckpointEvery = p.Dir, steps, batch, 20
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = meshtrain.Run(ctx, cfg)
		}()
	}
	wg.Wait()

	ref, err := train.New(meshtrain.LocalConfig().Train)
	if err != nil {
		t.Fatal(err)
	}
	for ref.Step() < steps {
		if _, err := ref.TrainStep(batch); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("trainer %d: %v", i, errs[i])
		}
		if r.Applied != steps || r.Joins != 1 || !r.Synced || r.Trainer.Step() != steps {
			t.Errorf("trainer %d: applied %d, joins %d, synced %v, at step %d; want %d, 1, true, %d",
				i, r.Applied, r.Joins, r.Synced, r.Trainer.Step(), steps, steps)
		}
		if r.Saves != steps/20 {
			t.Errorf("trainer %d: %d checkpoints saved, want %d", i, r.Saves, steps/20)
		}
		if got, want := r.Trainer.ParamHash(), results[0].Trainer.ParamHash(); got != want {
			t.Errorf("trainer %d: parameter hash %.16s, trainer 0 has %.16s", i, got, want)
		}
	}
	worst := 0.0
	for i, want := range ref.Params() {
		got := results[0].Trainer.Params()[i]
		d := math.Abs(float64(got - want))
		worst = max(worst, d)
		if d > 1e-4+1e-4*math.Abs(float64(want)) {
			t.Errorf("param %d after %d steps: %v on the mesh, %v with one worker", i, steps, got, want)
		}
	}
	t.Logf("%d members vs 1 worker, batch %d, %d steps, %d params: max |param difference| %.3g",
		members, batch, steps, len(ref.Params()), worst)
}
