package meshtrain

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/node/localapi"
	"github.com/ringmesh/ringmesh/train"
)

// dilocoReference runs the DiLoCo schedule of cfg in one process: at outer
// step k, member j takes H inner steps on part parts[k][j] of global
// batches k*H .. k*H+H-1 with its own inner SGD; the pseudo-gradients are
// averaged in float64 weighted by samples, and every member applies the
// average. It returns member 0 (all members hold the same theta_global).
func dilocoReference(t *testing.T, cfg Config, parts [][][2]int) *train.Trainer {
	t.Helper()
	members := make([]*train.Trainer, len(parts[0]))
	for j := range members {
		tr, err := cfg.newTrainer()
		if err != nil {
			t.Fatal(err)
		}
		members[j] = tr
	}
	n := cfg.Train.NumParams()
	sum, avg := make([]float64, n), make([]float32, n)
	for k, step := range parts {
		if len(step) != len(members) {
			t.Fatalf("outer step %d has %d parts for %d members", k, len(step), len(members))
		}
		clear(sum)
		weight := 0
		for j, m := range members {
			for i := range int(cfg.SyncEvery) {
				m.InnerStep(m.InnerBatch(i, cfg.GlobalBatch)[step[j][0]:step[j][1]])
			}
			w := int(cfg.SyncEvery) * (step[j][1] - step[j][0])
			for i, g := range m.PseudoGrad() {
				sum[i] += float64(w) * float64(g)
			}
			weight += w
		}
		for i := range avg {
			avg[i] = float32(sum[i] / float64(weight))
		}
		for _, m := range members {
			if err := m.Apply(avg); err != nil {
				t.Fatal(err)
			}
		}
	}
	return members[0]
}

func dilocoConfig(t *testing.T) Config {
	cfg := testConfig(t)
	cfg.SyncEvery, cfg.Steps = 4, 8
	cfg.CheckpointEvery = 4
	return cfg
}

// TestLoopDiLoCoMatchesSchedule: three loops in DiLoCo mode over the fake
// mesh (no shares: parts by rank) end bit-identical, where the same
// schedule run in one process does, each step averaging H*B samples.
func TestLoopDiLoCoMatchesSchedule(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names := []string{"a", "b", "c"}
	m := newFakeMesh(names...)
	cfg := dilocoConfig(t)
	results := runFakeMesh(ctx, t, m, names, cfg, func(i int, name string, s StepInfo) {
		lo, hi := train.ShardBounds(cfg.GlobalBatch, i, len(names))
		if s.Part != [2]int{lo, hi} || s.Samples != 4*(hi-lo) || s.TotalWeight != float64(4*cfg.GlobalBatch) {
			t.Errorf("%s step %d: part %v, %d samples of %v; want [%d %d), %d of %d",
				name, s.Step, s.Part, s.Samples, s.TotalWeight, lo, hi, 4*(hi-lo), 4*cfg.GlobalBatch)
		}
	})
	parts := make([][][2]int, cfg.Steps)
	for k := range parts {
		for j := range names {
			lo, hi := train.ShardBounds(cfg.GlobalBatch, j, len(names))
			parts[k] = append(parts[k], [2]int{lo, hi})
		}
	}
	ref := dilocoReference(t, cfg, parts)
	for i, r := range results {
		if r.Applied != int(cfg.Steps) || !r.Synced || r.Trainer.Step() != cfg.Steps {
			t.Errorf("%s: %+v at step %d, want %d outer steps applied, synced", names[i], r, r.Trainer.Step(), cfg.Steps)
		}
		if r.Trainer.ParamHash() != results[0].Trainer.ParamHash() {
			t.Errorf("%s: theta_global differs from %s's", names[i], names[0])
		}
		if d := maxDiff(r.Trainer.GlobalParams(), ref.GlobalParams()); d > 1e-5 {
			t.Errorf("%s: max |theta_global - the schedule's in one process| = %g", names[i], d)
		}
		if got := m.saves[names[i]]; len(got) != 2 || got[0] != 4 || got[1] != 8 {
			t.Errorf("%s saved outer steps %v, want [4 8]", names[i], got)
		}
	}
}

// TestLoopDiLoCoRejoin: a round answered "excluded" is not applied; the
// member joins again at a later outer step with that step's checkpoint
// (theta_global and the outer momentum), restarts its inner optimizer from
// zero and ends where a trainer that loaded the same checkpoint does.
func TestLoopDiLoCoRejoin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := dilocoConfig(t)
	cfg.CheckpointEvery = 0
	donor, err := cfg.newTrainer()
	if err != nil {
		t.Fatal(err)
	}
	for donor.Step() < 5 {
		if _, err := donor.TrainStep(cfg.GlobalBatch); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "ck")
	if err := os.WriteFile(path, donor.MarshalState(), 0o600); err != nil {
		t.Fatal(err)
	}
	m := newFakeMesh("solo")
	m.fail["solo"] = map[uint64]string{2: localapi.CodeExcluded}
	var joins []JoinInfo
	cfg.OnJoin = func(j JoinInfo) { joins = append(joins, j) }
	cfg.OnStep = func(s StepInfo) {
		if s.Step == 1 { // outer step 2 is answered "excluded" and the mesh goes on to 5
			m.mu.Lock()
			at := uint64(5)
			m.step, m.joinAt = at, &at
			m.ckpt = &localapi.CheckpointInfo{Step: at, Path: path}
			m.mu.Unlock()
		}
	}
	r, err := runLoop(ctx, cfg, &fakeConn{m: m, self: "solo"})
	if err != nil {
		t.Fatal(err)
	}
	if len(joins) != 2 || joins[1].Checkpoint != 5 || !joins[1].Synced || r.Applied != 2+int(cfg.Steps-5) {
		t.Fatalf("joins %+v, %d applied; want a second join that loaded checkpoint 5, %d applied", joins, r.Applied, 2+int(cfg.Steps-5))
	}
	want, err := cfg.newTrainer()
	if err != nil {
		t.Fatal(err)
	}
	if err := want.UnmarshalState(donor.MarshalState()); err != nil {
		t.Fatal(err)
	}
	for want.Step() < cfg.Steps {
		if _, err := want.TrainStep(cfg.GlobalBatch); err != nil {
			t.Fatal(err)
		}
	}
	if d := maxDiff(r.Trainer.GlobalParams(), want.GlobalParams()); d > 1e-5 {
		t.Errorf("max |theta_global - a fresh load's| = %g after the rejoin", d)
	}
}
