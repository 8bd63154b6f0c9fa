package demo

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/ringmesh/ringmesh/train/meshtrain"
)

// startTrainer starts the trainer loop of node i (a new incarnation).
func (d *Demo) startTrainer(ctx context.Context, wg *sync.WaitGroup, i int) {
	d.mu.Lock()
	n := d.nodes[i]
	n.run++
	run := n.run
	n.result, n.err, n.applied, n.state = nil, nil, 0, "joining"
	d.mu.Unlock()
	cfg := meshtrain.DefaultConfig()
	cfg.DataDir = n.dir
	cfg.Steps = d.cfg.Steps
	cfg.GlobalBatch = d.cfg.Batch
	cfg.CheckpointEvery = d.cfg.CheckpointEvery
	cfg.Train = d.cfg.Train
	cfg.OnStep = func(s meshtrain.StepInfo) {
		d.onStep(i, run, s)
		if d.cfg.Pace > 0 {
			time.Sleep(d.cfg.Pace)
		}
		if d.holding(s.Step) {
			time.Sleep(holdPace)
		}
	}
	cfg.OnJoin = func(j meshtrain.JoinInfo) { d.onJoin(i, run, j) }
	wg.Add(1)
	go func() {
		defer wg.Done()
		res, err := meshtrain.Run(ctx, cfg)
		d.mu.Lock()
		defer d.mu.Unlock()
		if n.run != run {
			return // an incarnation killed on purpose; its error is expected
		}
		switch {
		case err == nil:
			n.result, n.state = &res, "done"
		case d.kill != nil && d.kill.Node == n.name && run == 1:
			n.err, n.state = err, "killed"
		case errors.Is(err, context.Canceled):
			n.err, n.state = err, "stopped"
		default:
			n.err, n.state = err, "failed"
			d.errs = append(d.errs, n.name+": "+err.Error())
			d.eventLocked("%s: trainer failed: %v", n.name, err)
		}
		d.poke()
	}()
}

func (d *Demo) onJoin(i, run int, j meshtrain.JoinInfo) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.nodes[i]
	if n.run != run {
		return
	}
	n.state, n.synced, n.members = "training", j.Synced, len(j.Members)
	ck := "no checkpoint"
	if j.Checkpoint >= 0 {
		ck = "checkpoint of step " + itoa(uint64(j.Checkpoint))
	}
	if r := d.restart; r != nil && r.Node == n.name && run > 1 && !r.Rejoined && r.RejoinStep == 0 {
		r.RejoinStep, r.Checkpoint, r.Synced = j.Step, j.Checkpoint, j.Synced
	}
	if j.Reason != "start" || run > 1 {
		d.eventLocked("%s joined at step %d with %d members (%s, synced=%v, reason %s)", n.name, j.Step, len(j.Members), ck, j.Synced, j.Reason)
	}
	d.poke()
}

func (d *Demo) onStep(i, run int, s meshtrain.StepInfo) {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.nodes[i]
	if n.run != run {
		return
	}
	n.step, n.loss, n.localLoss, n.members, n.sps, n.synced = s.Step, s.Loss, s.LocalLoss, len(s.Members), s.SamplesPerSec, s.Synced
	n.applied++
	n.state = "training"
	d.points = append(d.points, lossPoint{Node: i, Step: s.Step, Loss: s.Loss, Local: s.LocalLoss})
	d.maxStep = max(d.maxStep, s.Step+1)
	if k := d.kill; k != nil && k.RecoveryMS == 0 && n.name != k.Node && !slices.Contains(s.Members, k.Peer) {
		k.RecoveredAtStep, k.RecoveryMS = s.Step, float64(now.Sub(k.at).Microseconds())/1000
		d.eventLocked("recovered: step %d applied by %d members %.0f ms after the kill (%d attempts)", s.Step, len(s.Members), k.RecoveryMS, s.Attempts)
	}
	if r := d.restart; r != nil && r.Node == n.name && run > 1 && !r.Rejoined {
		r.Rejoined, r.RejoinMS = true, float64(now.Sub(r.at).Microseconds())/1000
		d.eventLocked("%s rejoined: applied step %d with %d members, %.1f s after its restart", n.name, s.Step, len(s.Members), r.RejoinMS/1000)
	}
	if s.Step%10 == 0 || s.Step+1 == d.cfg.Steps {
		d.lines = append(d.lines, progressLine(n))
	}
	d.poke()
}

// Near the end, while the restarted node is still being admitted, every
// trainer slows to one step per holdPace (for at most holdMax) so that the
// run does not end before the rejoin it is there to show. Rounds go on, so
// the node can be admitted at a step boundary as usual.
const (
	holdSteps = 20
	holdPace  = 100 * time.Millisecond
	holdMax   = time.Minute
)

// holding reports whether the trainers should slow down after step.
func (d *Demo) holding(step uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.restart
	if r == nil || r.Rejoined || step+holdSteps < d.cfg.Steps || time.Since(r.at) > holdMax {
		return false
	}
	if !d.held {
		d.held = true
		d.eventLocked("%s not admitted yet: slowing to one step per %v near the end until it rejoins", r.Node, holdPace)
	}
	return true
}

// killNode SIGKILLs the chosen node's process.
func (d *Demo) killNode() {
	d.mu.Lock()
	n := d.nodes[d.cfg.KillNode]
	p, step := n.proc, d.maxStep
	d.kill = &demoKill{Node: n.name, Peer: n.id, Step: step, at: time.Now(), AtS: time.Since(d.start).Seconds()}
	d.eventLocked("SIGKILL %s (pid %d) after step %d", n.name, p.Cmd.Process.Pid, int64(step)-1)
	d.mu.Unlock()
	p.Kill()
	d.mu.Lock()
	n.state = "killed"
	d.mu.Unlock()
	d.poke()
}

// restartNode starts the killed node again with its data dir, joining
// through a live node.
func (d *Demo) restartNode(ctx context.Context) error {
	d.mu.Lock()
	n := d.nodes[d.cfg.KillNode]
	var via string
	for _, o := range d.nodes {
		if o != n && o.proc != nil {
			via = o.proc.Addr
			break
		}
	}
	d.restart = &demoRestart{Node: n.name, Step: d.maxStep, at: time.Now(), AtS: time.Since(d.start).Seconds(), Checkpoint: -1}
	n.state = "restarting"
	d.eventLocked("restarting %s with its data dir after step %d", n.name, int64(d.maxStep)-1)
	d.mu.Unlock()
	p, err := startNode(d.cfg.Bin, n.dir, "--min-members", itoa(uint64(d.cfg.Nodes)), "--join", via)
	if err != nil {
		return err
	}
	d.mu.Lock()
	n.proc, n.id = p, p.ID
	d.mu.Unlock()
	return nil
}
