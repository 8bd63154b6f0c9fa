package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ringmesh/ringmesh/train"
	"github.com/ringmesh/ringmesh/train/meshtrain"
)

// TrainConfig is `ringmesh bench train`: N local nodes, each with a Go
// trainer slowed to a relative speed.
type TrainConfig struct {
	// Speeds are the trainers' relative speeds, one per node: trainer i
	// sleeps SampleDelay/Speeds[i] per sample of its share.
	Speeds      []float64
	SampleDelay time.Duration // per sample at speed 1
	Batch       int           // global batch
	// Steps counts training steps (global batches). The mesh runs a round
	// each step, or Steps/SyncEvery rounds (rounded down) with SyncEvery;
	// the second half of the rounds is measured.
	Steps uint64
	// SyncEvery is DiLoCo's H (meshtrain.Config.SyncEvery): a round after
	// every H inner steps. 0: a round every step.
	SyncEvery uint64
	// OuterLR is DiLoCo's outer learning rate, with SyncEvery > 0.
	OuterLR float32
	// Wire is the all-reduce wire format (meshtrain.Config.Wire).
	Wire string
	// PadElems pads every all-reduced buffer with zeros (a larger model's
	// gradients, so that links matter).
	PadElems int
	// Late, when > 0, starts the last trainer once the others applied this
	// many rounds: it joins the running mesh (loading its checkpoint).
	Late   uint64
	Keep   bool
	Stderr io.Writer
	// Trace, when set, gets every trainer's steps as CSV lines
	// (t_s,member,step,share,samples,step_time_s,members), a header first.
	Trace io.Writer
	// Plot, when set, gets a PNG of the run at the end (PlotTrain: the
	// members' shares and the step time by step).
	Plot io.Writer
}

// TrainResult is the figures of a run.
type TrainResult struct {
	N      int       `json:"n"`
	Speeds []float64 `json:"speeds"`
	Batch  int       `json:"batch"`
	Steps  uint64    `json:"steps"`
	// SyncEvery is DiLoCo's H (0: a round every step), Rounds the
	// rounds the mesh ran and Wire the all-reduce wire format.
	SyncEvery uint64 `json:"sync_every"`
	Rounds    uint64 `json:"rounds"`
	Wire      string `json:"wire"`
	// BytesPerStep is the wire size of the buffer a round all-reduces
	// over the training steps it covers (H with SyncEvery): the bytes
	// all-reduced per training step. Each member sends and receives about
	// 2(n-1)/n of it.
	BytesPerStep float64 `json:"allreduce_bytes_per_step"`
	// MeshSamplesPerSec is the samples of the measured half of the rounds
	// (global batch x H per round) over their wall time (the slowest
	// member's).
	MeshSamplesPerSec float64 `json:"mesh_samples_per_s"`
	// StandaloneSamplesPerSec is each trainer's samples per second alone
	// (in this process, the whole batch, the same delay), and
	// StandaloneSum their sum: what the mesh could reach at best.
	StandaloneSamplesPerSec []float64 `json:"standalone_samples_per_s"`
	StandaloneSum           float64   `json:"standalone_sum"`
	Ratio                   float64   `json:"ratio"`
	// EqualBound is the ratio equal shares could reach at best: n times
	// the slowest trainer over the sum.
	EqualBound float64 `json:"equal_shares_bound"`
	// Shares are the members' shares of the last step, by node.
	Shares []float64 `json:"shares"`
}

// String is the result line `ringmesh bench train` prints.
func (r TrainResult) String() string {
	return fmt.Sprintf("train n=%d speeds=%s batch=%d steps=%d sync_every=%d mesh_samples_per_s=%.1f standalone_sum=%.1f ratio=%.3f equal_shares_bound=%.3f shares=%s wire=%s allreduce_bytes_per_step=%.0f",
		r.N, floats(r.Speeds, "%g"), r.Batch, r.Steps, r.SyncEvery, r.MeshSamplesPerSec, r.StandaloneSum, r.Ratio, r.EqualBound,
		floats(r.Shares, "%.3f"), r.Wire, r.BytesPerStep)
}

func floats(v []float64, format string) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(s, ",")
}

// Validate checks c as Train and TrainOn need it.
func (c TrainConfig) Validate() error {
	n := len(c.Speeds)
	switch {
	case n < 2 || slices.ContainsFunc(c.Speeds, func(s float64) bool { return !(s > 0) }):
		return fmt.Errorf("bench: speeds %v: want at least 2, all positive", c.Speeds)
	case c.Batch < n:
		return fmt.Errorf("bench: global batch %d smaller than the %d trainers", c.Batch, n)
	case c.SampleDelay <= 0:
		return fmt.Errorf("bench: sample delay %v must be positive", c.SampleDelay)
	case c.rounds() < 4:
		return fmt.Errorf("bench: %d steps make %d rounds, want at least 4", c.Steps, c.rounds())
	case c.Late >= c.rounds()/2:
		return fmt.Errorf("bench: the late trainer must join before half of the %d rounds (the second half is timed with every member)", c.rounds())
	}
	return c.trainer("validate", c.SampleDelay).Validate()
}

// rounds is how many rounds the mesh runs.
func (c TrainConfig) rounds() uint64 { return c.Steps / max(c.SyncEvery, 1) }

// trainer is the config of the trainer on the node of dir.
func (c TrainConfig) trainer(dir string, delay time.Duration) meshtrain.Config {
	cfg := meshtrain.LocalConfig()
	cfg.DataDir, cfg.Steps, cfg.GlobalBatch, cfg.CheckpointEvery = dir, c.rounds(), c.Batch, 0
	cfg.SampleDelay, cfg.PadElems, cfg.Wire = delay, c.PadElems, c.Wire
	if c.SyncEvery > 0 {
		cfg.SyncEvery, cfg.OuterLR = c.SyncEvery, c.OuterLR
	}
	return cfg
}

// Train runs the benchmark.
func Train(ctx context.Context, c TrainConfig) (TrainResult, error) {
	if err := c.Validate(); err != nil {
		return TrainResult{}, err
	}
	n := len(c.Speeds)
	res, delays, err := standaloneAll(ctx, c)
	if err != nil {
		return res, err
	}

	formers := n
	if c.Late > 0 {
		formers = n - 1
	}
	cl, err := startLocal(n, nodeArgs(formers, false, false), "", c.Stderr)
	if err != nil {
		return res, err
	}
	cl.keep = c.Keep
	defer cl.stop()
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = cl.dir(i)
	}
	err = trainOn(ctx, c, dirs, delays, &res)
	return res, err
}

// TrainOn runs the mesh half of the benchmark on running nodes (their
// data dirs, one trainer each), for nodes this process did not start (a
// lab); the standalone figures are measured first, as Train does.
func TrainOn(ctx context.Context, c TrainConfig, dirs []string) (TrainResult, error) {
	if err := c.Validate(); err != nil {
		return TrainResult{}, err
	}
	n := len(c.Speeds)
	if len(dirs) != n {
		return TrainResult{}, fmt.Errorf("bench: %d speeds for %d nodes", n, len(dirs))
	}
	res, delays, err := standaloneAll(ctx, c)
	if err != nil {
		return res, err
	}
	err = trainOn(ctx, c, dirs, delays, &res)
	return res, err
}

// standaloneAll measures every trainer alone and returns the result so
// far and the trainers' per-sample delays.
func standaloneAll(ctx context.Context, c TrainConfig) (TrainResult, []time.Duration, error) {
	n := len(c.Speeds)
	wire := c.Wire
	if wire == "" {
		wire = "float32"
	}
	res := TrainResult{N: n, Speeds: c.Speeds, Batch: c.Batch, Steps: c.rounds() * max(c.SyncEvery, 1),
		SyncEvery: c.SyncEvery, Rounds: c.rounds(), Wire: wire,
		BytesPerStep: float64(wireBytes(4*int64(c.trainer("", 0).BufferElems()), wire)) / float64(max(c.SyncEvery, 1))}
	delays := make([]time.Duration, n)
	for i, s := range c.Speeds {
		delays[i] = time.Duration(float64(c.SampleDelay) / s)
	}
	for _, d := range delays {
		v, err := standalone(ctx, c.Batch, d)
		if err != nil {
			return res, nil, err
		}
		res.StandaloneSamplesPerSec = append(res.StandaloneSamplesPerSec, v)
		res.StandaloneSum += v
	}
	res.EqualBound = float64(n) * slices.Min(res.StandaloneSamplesPerSec) / res.StandaloneSum
	return res, delays, nil
}

// trainOn runs one trainer per node dir and fills in res's mesh figures.
func trainOn(ctx context.Context, c TrainConfig, dirs []string, delays []time.Duration, res *TrainResult) error {
	n := len(dirs)
	rounds := c.rounds()
	half := rounds / 2
	var mu sync.Mutex
	at := make([]time.Time, 2*n) // per member: when step half, and the last step, applied
	res.Shares = make([]float64, n)
	errs := make([]error, n)
	late := make(chan struct{})
	var lateOnce sync.Once
	if c.Late == 0 {
		close(late)
	}
	var points []TrainPoint
	start := time.Now()
	if c.Trace != nil {
		fmt.Fprintln(c.Trace, "t_s,member,step,share,samples,step_time_s,members")
	}
	var wg sync.WaitGroup
	for i := range n {
		cfg := c.trainer(dirs[i], delays[i])
		cfg.OnStep = func(s meshtrain.StepInfo) {
			mu.Lock()
			switch s.Step {
			case half:
				at[2*i] = time.Now()
			case rounds - 1:
				at[2*i+1] = time.Now()
				res.Shares[i] = s.Share
			}
			if c.Plot != nil {
				points = append(points, TrainPoint{Member: i, Step: s.Step, Share: s.Share, StepTime: s.StepTime.Seconds()})
			}
			if c.Trace != nil {
				fmt.Fprintf(c.Trace, "%.4f,%d,%d,%.5f,%d,%.4f,%d\n", time.Since(start).Seconds(), i, s.Step, s.Share, s.Samples, s.StepTime.Seconds(), len(s.Members))
			}
			mu.Unlock()
			if c.Late > 0 && i == 0 && s.Step+1 >= c.Late {
				lateOnce.Do(func() { close(late) })
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == n-1 {
				select {
				case <-late:
				case <-ctx.Done():
					errs[i] = ctx.Err()
					return
				}
			}
			_, errs[i] = meshtrain.Run(ctx, cfg)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("trainer %d: %w", i, err)
		}
	}
	var from, to time.Time
	for i := range n {
		if from.IsZero() || at[2*i].Before(from) {
			from = at[2*i]
		}
		to = later(to, at[2*i+1])
	}
	res.MeshSamplesPerSec = float64(c.Batch) * float64(max(c.SyncEvery, 1)*(rounds-1-half)) / to.Sub(from).Seconds()
	res.Ratio = res.MeshSamplesPerSec / res.StandaloneSum
	if c.Plot == nil {
		return nil
	}
	names := make([]string, n)
	for i, sp := range c.Speeds {
		names[i] = fmt.Sprintf("trainer %d (speed %g)", i, sp)
	}
	if c.Late > 0 {
		names[n-1] += fmt.Sprintf(", joins at step %d", c.Late)
	}
	title := fmt.Sprintf("ringmesh bench train: %d trainers at speeds %s, global batch %d", n, floats(c.Speeds, "%g"), c.Batch)
	if c.SyncEvery > 0 {
		title += fmt.Sprintf(", DiLoCo H=%d", c.SyncEvery)
	}
	if err := PlotTrain(c.Plot, title, names, points); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// standalone is one trainer's samples per second alone: the whole batch
// each step, with the per-sample delay.
func standalone(ctx context.Context, batch int, delay time.Duration) (float64, error) {
	tr, err := train.New(meshtrain.LocalConfig().Train)
	if err != nil {
		return 0, err
	}
	const steps = 4
	start := time.Now()
	for range steps {
		if _, err := tr.TrainStep(batch); err != nil {
			return 0, err
		}
		t := time.NewTimer(time.Duration(batch) * delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		}
	}
	return float64(batch*steps) / time.Since(start).Seconds(), nil
}
