package rounds

import (
	"testing"
	"time"
)

// TestPartsReducePhaseBound: the reduce phase of a step submitted in parts
// (the trainers still compute while it runs) outlasts PhaseTimeout and is
// bounded by PhaseTimeout + TrainerTimeout; a plain step's is abandoned
// and retried after PhaseTimeout.
func TestPartsReducePhaseBound(t *testing.T) {
	for _, inParts := range []bool{false, true} {
		cfg := simConfig(1)
		cfg.TrainerTimeout = 3 * time.Second
		a := simID(0)
		m := New(cfg, a, Durable{Epoch: 1, Step: 3, List: []ID{a}})
		now := simEpoch
		m.Step(now, TrainerJoin{StartStep: 3})
		m.Step(now, ViewChanged{Settled: true})
		var starts []time.Duration
		count := func(fx []Effect) {
			for _, e := range fx {
				if _, ok := e.(StartReduce); ok {
					starts = append(starts, now.Sub(simEpoch))
				}
			}
		}
		count(m.Step(now, Submit{Step: 3, InParts: inParts}))
		for now.Sub(simEpoch) < 6*time.Second {
			now = now.Add(50 * time.Millisecond)
			count(m.Step(now, Tick{}))
		}
		if len(starts) == 0 {
			t.Fatalf("inParts=%v: no all-reduce started", inParts)
		}
		first := starts[0]
		var retry time.Duration
		if len(starts) > 1 {
			retry = starts[1] - first
		}
		switch {
		case !inParts && (retry == 0 || retry > 2*cfg.PhaseTimeout):
			t.Errorf("plain step: retried %v after the first start, want about PhaseTimeout (%v)", retry, cfg.PhaseTimeout)
		case inParts && (retry != 0 && retry <= cfg.PhaseTimeout+cfg.TrainerTimeout):
			t.Errorf("step in parts: retried %v after the first start, want after PhaseTimeout+TrainerTimeout (%v)", retry, cfg.PhaseTimeout+cfg.TrainerTimeout)
		case inParts && retry == 0:
			t.Errorf("step in parts: never retried within 6s, want after PhaseTimeout+TrainerTimeout (%v)", cfg.PhaseTimeout+cfg.TrainerTimeout)
		}
	}
}
