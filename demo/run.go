package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ringmesh/ringmesh/internal/nodeproc"
	"github.com/ringmesh/ringmesh/node"
	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/train"
	"github.com/ringmesh/ringmesh/train/meshtrain"
)

// Config is `ringmesh demo`'s flags.
type Config struct {
	Nodes           int
	Steps           uint64
	KillAt          uint64 // 0: no kill
	RestartAt       uint64 // 0: no restart
	KillNode        int
	Out             string
	JSON            bool
	Batch           int
	CheckpointEvery uint64
	Pace            time.Duration // extra compute time per step
	Bin             string        // the ringmesh binary the nodes run
	Train           train.Config
}

// Validate checks the config as the demo needs it.
func (c Config) Validate() error {
	switch {
	case c.Nodes < 2 || c.Nodes > 16:
		return fmt.Errorf("--nodes %d: want 2..16", c.Nodes)
	case c.Steps < 20:
		return fmt.Errorf("--steps %d: want at least 20", c.Steps)
	case c.Batch < c.Nodes:
		return fmt.Errorf("--batch %d: want at least one sample per node (%d)", c.Batch, c.Nodes)
	case c.KillAt >= c.Steps:
		return fmt.Errorf("--kill-at %d: must be before --steps %d", c.KillAt, c.Steps)
	case c.RestartAt > 0 && (c.KillAt == 0 || c.RestartAt <= c.KillAt || c.RestartAt >= c.Steps):
		return fmt.Errorf("--restart-at %d: must be after --kill-at %d and before --steps %d", c.RestartAt, c.KillAt, c.Steps)
	case c.KillNode < 0 || c.KillNode >= c.Nodes:
		return fmt.Errorf("--kill-node %d: want 0..%d", c.KillNode, c.Nodes-1)
	}
	return nil
}

// demoNode is one node process slot and its trainer's progress.
type demoNode struct {
	name, dir string
	proc      *nodeproc.Proc
	id        string
	run       int // trainer incarnation: 1, then 2 after a restart
	state     string
	step      uint64 // last step applied
	applied   int
	loss      float32 // global batch loss of the last step
	localLoss float32
	members   int
	sps       float64
	synced    bool
	result    *meshtrain.Result
	err       error
}

// lossPoint is one applied step of one node.
type lossPoint struct {
	Node  int
	Step  uint64
	Loss  float32 // global batch loss
	Local float32 // this node's shard loss
}

// demo runs the demo and holds everything its view and summary show.
type Demo struct {
	cfg   Config
	start time.Time

	mu       sync.Mutex
	nodes    []*demoNode
	points   []lossPoint
	maxStep  uint64 // highest step applied by anyone, +1 (0: none yet)
	events   []string
	lines    []string // plain progress lines not yet printed
	kill     *demoKill
	restart  *demoRestart
	errs     []string
	held     bool // trainers were slowed to wait for the rejoin
	progress chan struct{}
}

type demoKill struct {
	Node            string  `json:"node"`
	Peer            string  `json:"peer"`
	Step            uint64  `json:"step"` // steps applied by the mesh when it was killed
	AtS             float64 `json:"at_s"`
	RecoveredAtStep uint64  `json:"recovered_at_step"` // first step applied without it
	RecoveryMS      float64 `json:"recovery_ms"`       // kill to that step's apply
	at              time.Time
}

type demoRestart struct {
	Node       string  `json:"node"`
	Step       uint64  `json:"step"` // steps applied by the mesh when it was restarted
	AtS        float64 `json:"at_s"`
	RejoinStep uint64  `json:"rejoin_step"` // its entry step
	Checkpoint int64   `json:"checkpoint"`  // the checkpoint step it loaded, -1 none
	Synced     bool    `json:"synced"`
	RejoinMS   float64 `json:"rejoin_ms"` // restart to its first applied step
	Rejoined   bool    `json:"rejoined"`
	at         time.Time
}

func New(cfg Config) *Demo {
	d := &Demo{cfg: cfg, progress: make(chan struct{}, 1)}
	for i := 0; i < cfg.Nodes; i++ {
		name := fmt.Sprintf("node%d", i)
		d.nodes = append(d.nodes, &demoNode{name: name, dir: filepath.Join(cfg.Out, "nodes", name), state: "starting"})
	}
	return d
}

// event records and shows a line.
func (d *Demo) event(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.eventLocked(format, args...)
}

func (d *Demo) eventLocked(format string, args ...any) {
	d.events = append(d.events, fmt.Sprintf("[%5.1fs] ", time.Since(d.start).Seconds())+fmt.Sprintf(format, args...))
}

func (d *Demo) poke() {
	select {
	case d.progress <- struct{}{}:
	default:
	}
}

// run starts the nodes and trainers, kills and restarts one node, and
// waits until training ends. Nodes are stopped before it returns.
func (d *Demo) Run(ctx context.Context, out io.Writer) error {
	d.start = time.Now()
	if err := os.RemoveAll(filepath.Join(d.cfg.Out, "nodes")); err != nil {
		return err
	}
	defer d.stopNodes()
	view := newDemoView(d, out)
	vctx, stopView := context.WithCancel(ctx)
	viewDone := make(chan struct{})
	go func() { defer close(viewDone); view.run(vctx) }()
	defer func() { stopView(); <-viewDone }()

	if err := d.startNodes(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	tctx, cancelTrainers := context.WithCancel(ctx)
	defer cancelTrainers()
	for i := range d.nodes {
		d.startTrainer(tctx, &wg, i)
	}
	if d.cfg.KillAt > 0 {
		if !d.waitStep(ctx, d.cfg.KillAt) {
			return d.stopped(ctx)
		}
		d.killNode()
		if d.cfg.RestartAt > 0 {
			if !d.waitStep(ctx, d.cfg.RestartAt) {
				return d.stopped(ctx)
			}
			if err := d.restartNode(ctx); err != nil {
				return err
			}
			d.startTrainer(tctx, &wg, d.cfg.KillNode)
		}
	}
	d.waitTrainers(ctx, cancelTrainers)
	return ctx.Err()
}

func (d *Demo) stopped(ctx context.Context) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("training ended before the kill/restart step")
}

func (d *Demo) startNodes(ctx context.Context) error {
	minMembers := fmt.Sprint(d.cfg.Nodes)
	var token string
	for i, n := range d.nodes {
		args := []string{"--min-members", minMembers}
		if i > 0 {
			// The other hosts join the way a user's would: with the join
			// token of the first (mesh name, secret, addresses).
			args = append(args, "--join", token)
		}
		p, err := startNode(d.cfg.Bin, n.dir, args...)
		if err != nil {
			return err
		}
		d.mu.Lock()
		n.proc, n.id, n.state = p, p.ID, "joining"
		d.mu.Unlock()
		if i == 0 {
			st, err := client.ReadStatus(ctx, n.dir)
			if err != nil {
				return fmt.Errorf("join token of %s: %w", n.name, err)
			}
			t, err := node.JoinToken(st, nil)
			if err != nil {
				return fmt.Errorf("join token of %s: %w", n.name, err)
			}
			token = t.String()
			d.event("node0 created the mesh's secret; the others join with its token (ringmesh token --data-dir %s)", n.dir)
		}
	}
	d.event("started %d nodes; node0 listens on %s", len(d.nodes), d.nodes[0].proc.Addr)
	return nil
}

func (d *Demo) stopNodes() {
	var wg sync.WaitGroup
	for _, n := range d.nodes {
		d.mu.Lock()
		p := n.proc
		d.mu.Unlock()
		if p == nil {
			continue
		}
		select {
		case <-p.Done():
			continue // the killed one, or one that exited (already reported)
		default:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Stop(10 * time.Second); err != nil {
				d.mu.Lock()
				d.errs = append(d.errs, err.Error())
				d.mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// waitStep waits until the mesh has applied step-1 (step steps in all); it
// returns false if ctx ended or every trainer stopped first.
func (d *Demo) waitStep(ctx context.Context, step uint64) bool {
	for {
		d.mu.Lock()
		reached, running := d.maxStep >= step, d.runningLocked()
		d.mu.Unlock()
		if reached {
			return true
		}
		if running == 0 {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-d.progress:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (d *Demo) runningLocked() int {
	n := 0
	for _, nd := range d.nodes {
		if nd.run > 0 && nd.result == nil && nd.err == nil {
			n++
		}
	}
	return n
}

// waitTrainers waits for every trainer. A restarted trainer still waiting
// to be admitted when all the others have finished is given a grace
// period and then stopped (the mesh it would join has ended).
func (d *Demo) waitTrainers(ctx context.Context, cancel context.CancelFunc) {
	var graceEnd time.Time
	for {
		d.mu.Lock()
		running, training := 0, 0
		for _, nd := range d.nodes {
			if nd.run > 0 && nd.result == nil && nd.err == nil {
				running++
				if nd.applied > 0 {
					training++
				}
			}
		}
		d.mu.Unlock()
		if running == 0 || ctx.Err() != nil {
			return
		}
		if training == 0 {
			if graceEnd.IsZero() {
				graceEnd = time.Now().Add(20 * time.Second)
			} else if time.Now().After(graceEnd) {
				d.event("the mesh finished before the restarted node was admitted; stopping its trainer")
				cancel()
			}
		}
		select {
		case <-ctx.Done():
		case <-d.progress:
		case <-time.After(100 * time.Millisecond):
		}
	}
}
