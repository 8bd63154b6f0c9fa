package demo

import (
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/ringmesh/ringmesh/train"
)

// Summary is summary.json.
type Summary struct {
	OK              bool         `json:"ok"`
	Problems        []string     `json:"problems,omitempty"`
	Nodes           int          `json:"nodes"`
	Steps           uint64       `json:"steps"`         // steps asked for
	StepsApplied    uint64       `json:"steps_applied"` // highest step applied + 1
	GlobalBatch     int          `json:"global_batch"`
	Params          int          `json:"params"`
	DurationS       float64      `json:"duration_s"`
	StepsPerSec     float64      `json:"steps_per_sec"`
	FirstLoss       float32      `json:"first_loss"` // global batch loss, mean of the first 10 steps
	FinalLoss       float32      `json:"final_loss"` // global batch loss, mean of the last 10 steps
	InitialEvalLoss float32      `json:"initial_eval_loss"`
	FinalEvalLoss   float32      `json:"final_eval_loss"`
	FinalAccuracy   float32      `json:"final_accuracy"`
	LossFell        bool         `json:"loss_fell"`
	Kill            *demoKill    `json:"kill,omitempty"`
	Restart         *demoRestart `json:"restart,omitempty"`
	// SlowedForRejoin: near the end the trainers were slowed down to let
	// the restarted node finish joining.
	SlowedForRejoin bool              `json:"slowed_for_rejoin,omitempty"`
	Hashes          map[string]string `json:"hashes"` // live node -> SHA-256 of its final parameters
	HashesEqual     bool              `json:"hashes_equal"`
	Out             string            `json:"out"`
}

// evalSamples is the held-out set size of the loss check.
const evalSamples = 2048

func (d *Demo) Summarize(runErr error) Summary {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Summary{Nodes: d.cfg.Nodes, Steps: d.cfg.Steps, StepsApplied: d.maxStep, GlobalBatch: d.cfg.Batch,
		Params: d.cfg.Train.NumParams(), DurationS: time.Since(d.start).Seconds(), Kill: d.kill, Restart: d.restart, SlowedForRejoin: d.held,
		Hashes: map[string]string{}, Out: d.cfg.Out}
	if s.DurationS > 0 {
		s.StepsPerSec = float64(d.maxStep) / s.DurationS
	}
	if runErr != nil {
		s.Problems = append(s.Problems, "demo stopped: "+runErr.Error())
	}
	s.Problems = append(s.Problems, d.errs...)
	s.FirstLoss, s.FinalLoss = d.lossRangeLocked()
	var final *train.Trainer
	for _, n := range d.nodes {
		if n.result == nil {
			continue
		}
		s.Hashes[n.name] = n.result.Trainer.ParamHash()
		if !n.result.Synced {
			s.Problems = append(s.Problems, n.name+": trainer state not the mesh's (no checkpoint of its entry step)")
		}
		final = n.result.Trainer
	}
	s.HashesEqual = len(s.Hashes) >= 2
	for _, h := range s.Hashes {
		for _, o := range s.Hashes {
			s.HashesEqual = s.HashesEqual && h == o
		}
	}
	if !s.HashesEqual {
		s.Problems = append(s.Problems, fmt.Sprintf("final parameter hashes of %d live nodes differ (or fewer than 2 live nodes)", len(s.Hashes)))
	}
	if init, err := train.New(d.cfg.Train); err == nil && final != nil {
		s.InitialEvalLoss, _ = init.Evaluate(evalSamples)
		s.FinalEvalLoss, s.FinalAccuracy = final.Evaluate(evalSamples)
		s.LossFell = s.FinalEvalLoss < s.InitialEvalLoss && s.FinalLoss < s.FirstLoss
	}
	if !s.LossFell {
		s.Problems = append(s.Problems, "the loss did not fall")
	}
	if d.cfg.RestartAt > 0 && (d.restart == nil || !d.restart.Rejoined) {
		s.Problems = append(s.Problems, "the restarted node did not rejoin")
	}
	if d.cfg.KillAt > 0 && (d.kill == nil || d.kill.RecoveryMS == 0) {
		s.Problems = append(s.Problems, "the survivors did not apply a step after the kill")
	}
	if d.maxStep < d.cfg.Steps {
		s.Problems = append(s.Problems, fmt.Sprintf("training stopped at step %d of %d", d.maxStep, d.cfg.Steps))
	}
	s.OK = len(s.Problems) == 0
	return s
}

// lossRangeLocked returns the mean global batch loss of the first and of the
// last 10 steps applied.
func (d *Demo) lossRangeLocked() (first, last float32) {
	byStep := map[uint64]float32{}
	for _, p := range d.points {
		byStep[p.Step] = p.Loss
	}
	steps := make([]uint64, 0, len(byStep))
	for k := range byStep {
		steps = append(steps, k)
	}
	sort.Slice(steps, func(i, j int) bool { return steps[i] < steps[j] })
	mean := func(ks []uint64) float32 {
		var s float32
		for _, k := range ks {
			s += byStep[k]
		}
		return s / float32(max(len(ks), 1))
	}
	k := min(10, len(steps))
	return mean(steps[:k]), mean(steps[len(steps)-k:])
}

func PrintSummary(w io.Writer, s Summary) {
	fmt.Fprintf(w, "\nringmesh demo summary (%s)\n", s.Out)
	fmt.Fprintf(w, "  steps         %d of %d in %.1fs (%.1f steps/s), %d nodes, global batch %d, %d params\n",
		s.StepsApplied, s.Steps, s.DurationS, s.StepsPerSec, s.Nodes, s.GlobalBatch, s.Params)
	fmt.Fprintf(w, "  loss          %.4f -> %.4f (batch, first/last 10 steps); held-out %.4f -> %.4f, accuracy %.1f%%\n",
		s.FirstLoss, s.FinalLoss, s.InitialEvalLoss, s.FinalEvalLoss, 100*s.FinalAccuracy)
	if k := s.Kill; k != nil {
		fmt.Fprintf(w, "  kill          %s SIGKILLed after step %d at %.1fs\n", k.Node, int64(k.Step)-1, k.AtS)
		fmt.Fprintf(w, "  recovery      %.0f ms: kill to step %d applied without it\n", k.RecoveryMS, k.RecoveredAtStep)
	}
	if r := s.Restart; r != nil {
		if r.Rejoined {
			ck := "no checkpoint"
			if r.Checkpoint >= 0 {
				ck = fmt.Sprintf("checkpoint of step %d", r.Checkpoint)
			}
			fmt.Fprintf(w, "  rejoin        %s restarted after step %d, rejoined at step %d (%s, synced=%v), %.1fs after its restart\n",
				r.Node, int64(r.Step)-1, r.RejoinStep, ck, r.Synced, r.RejoinMS/1000)
		} else {
			fmt.Fprintf(w, "  rejoin        %s restarted after step %d but did not rejoin\n", r.Node, int64(r.Step)-1)
		}
	}
	names := make([]string, 0, len(s.Hashes))
	for n := range s.Hashes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  hash %-8s %s\n", n, s.Hashes[n])
	}
	verdict := "OK: live nodes have equal parameters and the loss fell"
	if !s.OK {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "  result        %s\n", verdict)
	for _, p := range s.Problems {
		fmt.Fprintf(w, "  problem       %s\n", p)
	}
}
