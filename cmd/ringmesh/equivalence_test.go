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
// 4 node processes with a Go trainer each, global batch B split by the
// shares the mesh agrees and averaged by weighted mean through the ring
// all-reduce, end with the parameters of 1 in-process trainer that takes
// the whole batch B over the same data order (within float32 tolerance),
// and bit-identical to each other. With mixed speeds (trainers slowed by a
// per-sample delay of 0, 1, 2 and 4 units) the shares are unequal and
// change from step to step, and every step still covers exactly B samples.
func TestMeshTrainingEquivalence(t *testing.T) {
	t.Run("equal", func(t *testing.T) { meshEquivalence(t, nil) })
	t.Run("mixed speeds", func(t *testing.T) {
		meshEquivalence(t, []time.Duration{0, 400 * time.Microsecond, 800 * time.Microsecond, 1600 * time.Microsecond})
	})
}

func meshEquivalence(t *testing.T, delays []time.Duration) {
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
	shares := make([][]float64, members) // by member, by step
	var wg sync.WaitGroup
	for i, p := range ps {
		cfg := meshtrain.LocalConfig()
		cfg.DataDir, cfg.Steps, cfg.GlobalBatch, cfg.CheckpointEvery = p.Dir, steps, batch, 20
		if delays != nil {
			cfg.SampleDelay = delays[i]
		}
		cfg.OnStep = func(s meshtrain.StepInfo) {
			shares[i] = append(shares[i], s.Share)
			if s.TotalWeight != batch {
				t.Errorf("trainer %d step %d averaged %v samples, want the global batch %d", i, s.Step, s.TotalWeight, batch)
			}
		}
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
	if delays == nil {
		return
	}
	last := make([]float64, members)
	changed := 0
	for i := range shares {
		last[i] = shares[i][len(shares[i])-1]
		for k := 1; k < len(shares[i]); k++ {
			if shares[i][k] != shares[i][k-1] {
				changed++
			}
		}
	}
	t.Logf("shares of the last step %.3f (%d changes over all members' steps)", last, changed)
	if !(last[0] > 1.5*last[3]) || changed == 0 {
		t.Errorf("shares %v: the fastest trainer should hold well over the slowest's share, and shares should move", last)
	}
}
