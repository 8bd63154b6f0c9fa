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

// TestReducePhaseBoundedByProgress: an all-reduce that keeps moving bytes
// is never abandoned however long it takes (here 10x PhaseTimeout), and
// one that stops moving is abandoned PhaseTimeout after its last progress.
func TestReducePhaseBoundedByProgress(t *testing.T) {
	cfg := simConfig(1)
	a := simID(0)
	m := New(cfg, a, Durable{Epoch: 1, Step: 3, List: []ID{a}})
	now := simEpoch
	m.Step(now, TrainerJoin{StartStep: 3})
	m.Step(now, ViewChanged{Settled: true})
	var starts []StartReduce
	var at []time.Duration
	count := func(fx []Effect) {
		for _, e := range fx {
			if s, ok := e.(StartReduce); ok {
				starts, at = append(starts, s), append(at, now.Sub(simEpoch))
			}
		}
	}
	count(m.Step(now, Submit{Step: 3}))
	if len(starts) != 1 {
		t.Fatalf("%d all-reduces started, want 1", len(starts))
	}
	first := starts[0]
	long := 10 * cfg.PhaseTimeout
	for now.Sub(simEpoch) < long {
		now = now.Add(cfg.PhaseTimeout / 4)
		count(m.Step(now, ReduceProgress{Step: first.Step, Attempt: first.Attempt}))
	}
	if len(starts) != 1 {
		t.Fatalf("an all-reduce moving bytes was abandoned: attempts started at %v", at)
	}
	stalledAt := now
	for now.Sub(stalledAt) < 3*cfg.PhaseTimeout && len(starts) == 1 {
		now = now.Add(cfg.PhaseTimeout / 20)
		count(m.Step(now, Tick{}))
	}
	switch {
	case len(starts) == 1:
		t.Fatalf("a stalled all-reduce was never abandoned (3x PhaseTimeout after its last progress)")
	case now.Sub(stalledAt) <= cfg.PhaseTimeout:
		t.Errorf("a stalled all-reduce was abandoned %v after its last progress, want after PhaseTimeout (%v)", now.Sub(stalledAt), cfg.PhaseTimeout)
	}
	// Progress of an abandoned attempt does not hold up the new one.
	second := starts[1]
	from := now
	for now.Sub(from) < 3*cfg.PhaseTimeout && len(starts) == 2 {
		now = now.Add(cfg.PhaseTimeout / 20)
		count(m.Step(now, ReduceProgress{Step: first.Step, Attempt: first.Attempt}))
	}
	if len(starts) == 2 || second.Attempt == first.Attempt {
		t.Errorf("progress reported for an old attempt kept attempt %v alive", second.Attempt)
	}
}

// TestHeldResultWaitsForParts: a trainer one step behind, whose node holds
// that step's decided result, submits it: whole, the result is applied at
// once; in parts, only once the trainer marked every part ready (a copy
// into its buffer before that would be overwritten by the parts it still
// writes).
func TestHeldResultWaitsForParts(t *testing.T) {
	for _, inParts := range []bool{false, true} {
		a := simID(0)
		v := Value{Attempt: Ballot{N: 1, By: a}, Ring: []ID{a}, Next: []ID{a}}
		m := New(simConfig(1), a, Durable{Epoch: 1, Step: 4, List: []ID{a}, Last: &Decided{Step: 3, Value: v}, LastHeld: true})
		now := simEpoch
		m.Step(now, TrainerJoin{StartStep: 3})
		m.Step(now, ViewChanged{Settled: true})
		applied := func(fx []Effect) bool {
			for _, e := range fx {
				if ap, ok := e.(Apply); ok && ap.Step == 3 {
					return true
				}
			}
			return false
		}
		atSubmit := applied(m.Step(now, Submit{Step: 3, InParts: inParts}))
		atReady := inParts && applied(m.Step(now, PartsReady{Step: 3}))
		switch {
		case !inParts && !atSubmit:
			t.Error("whole buffer: the held result was not applied at the submit")
		case inParts && atSubmit:
			t.Error("in parts: the held result was applied at the submit, before the trainer wrote its parts")
		case inParts && !atReady:
			t.Error("in parts: the held result was not applied when the parts were ready")
		}
	}
}
