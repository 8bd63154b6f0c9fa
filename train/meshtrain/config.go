package meshtrain

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/ringmesh/ringmesh/train"
)

// Config is one trainer loop.
type Config struct {
	// DataDir is the node's data dir: the loop dials DATA_DIR/ringmesh.sock.
	// Required.
	DataDir string
	// Steps ends the loop once the mesh's next step reaches Steps (every
	// member applies steps 0..Steps-1). Required, positive.
	Steps uint64
	// GlobalBatch is B, the samples of one step across the whole mesh,
	// split among members by the shares the mesh agrees for each step
	// (in proportion to the members' measured speeds). Larger batches cost compute linearly and
	// make all-reduce time relatively smaller. Default 256.
	GlobalBatch int
	// CheckpointEvery saves a checkpoint when the state reaches a multiple
	// of this many steps; 0 saves only when the node asks (joiners). Each
	// save writes the whole state (8 bytes per parameter) and the node
	// stores and announces it. Every member saves the same bytes, so every
	// node holds the checkpoint under the same root. Default 50.
	CheckpointEvery uint64
	// CheckpointDir is where state files are written before they are
	// handed to the node, and where the node writes the checkpoint a join
	// hands over (join-state.rmts); "" means DataDir/trainer. The loop
	// keeps the two newest state files.
	CheckpointDir string
	// Train is the model, data and optimizer. Every member of a mesh must
	// use the same Train config (a checkpoint of another config is
	// rejected). Default train.DefaultConfig().
	Train train.Config
	// Wire is the all-reduce wire format: "" or "float32" (bit-exact
	// against one worker up to summation order), "bfloat16", "float16",
	// "int8", "float4" (block-quantized: for DiLoCo's pseudo-gradients).
	Wire string
	// SyncEvery is H of DiLoCo, low-communication training: each member
	// takes H inner SGD steps alone, each on its share of a global batch
	// of GlobalBatch, and then one round averages the members'
	// pseudo-gradients theta_global - theta_local weighted by samples, and
	// every member takes the same Nesterov outer step (OuterLR,
	// OuterMomentum) on theta_global. A mesh step is then an outer step:
	// Steps and CheckpointEvery count outer steps, and a checkpoint holds
	// theta_global and the outer momentum (the inner optimizer restarts
	// on a join). The all-reduce traffic per sample falls to 1/H; the
	// members' models drift apart for H steps, so the result is no longer
	// one worker's. 0: every step is all-reduced (data parallelism).
	// Default 0.
	SyncEvery uint64
	// OuterLR is DiLoCo's outer learning rate (with SyncEvery > 0).
	// Default 0.7.
	OuterLR float32
	// OuterMomentum is DiLoCo's outer Nesterov momentum in [0, 1) (with
	// SyncEvery > 0). Default 0.9.
	OuterMomentum float32
	// SampleDelay slows this trainer down by sleeping this long per sample
	// of its share after computing its gradient: a stand-in for a slower
	// card in benchmarks and tests of mixed hardware. 0: none.
	SampleDelay time.Duration
	// PadElems appends this many zeros to every all-reduced buffer: a
	// stand-in for a larger model's gradients in benchmarks of links. 0:
	// none.
	PadElems int
	// JoinTimeout bounds one join call; a join that times out is retried
	// until ctx ends. Default 10s.
	JoinTimeout time.Duration
	// OnStep is called after every applied step, on the loop's goroutine;
	// it must return quickly. nil: nothing.
	OnStep func(StepInfo)
	// OnJoin is called after every join, on the loop's goroutine. nil:
	// nothing.
	OnJoin func(JoinInfo)
	// Logger receives lifecycle and warning logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults documented on Config; DataDir and
// Steps must still be set.
func DefaultConfig() Config {
	return Config{
		GlobalBatch:     256,
		CheckpointEvery: 50,
		Train:           train.DefaultConfig(),
		OuterLR:         train.DefaultOuter().LR,
		OuterMomentum:   train.DefaultOuter().Momentum,
		JoinTimeout:     10 * time.Second,
	}
}

// LocalConfig is a small, fast preset for tests: train.LocalConfig, batch
// 64, a checkpoint every 10 steps.
func LocalConfig() Config {
	c := DefaultConfig()
	c.GlobalBatch = 64
	c.CheckpointEvery = 10
	c.Train = train.LocalConfig()
	return c
}

// maxBatch bounds GlobalBatch: a larger one is a typo, not a plan.
const maxBatch = 1 << 24

// Validate checks every field.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return fmt.Errorf("%w: no data dir", ErrConfig)
	case c.Steps == 0:
		return fmt.Errorf("%w: steps must be positive", ErrConfig)
	case c.PadElems < 0 || c.PadElems > 1<<30:
		return fmt.Errorf("%w: padding of %d elements", ErrConfig, c.PadElems)
	case c.GlobalBatch < 1 || c.GlobalBatch > maxBatch:
		return fmt.Errorf("%w: global batch %d not in 1..%d", ErrConfig, c.GlobalBatch, maxBatch)
	case c.JoinTimeout <= 0:
		return fmt.Errorf("%w: join timeout %v must be positive", ErrConfig, c.JoinTimeout)
	}
	switch c.Wire {
	case "", "float32", "bfloat16", "float16", "int8", "float4":
	default:
		return fmt.Errorf("%w: wire %q: want float32, bfloat16, float16, int8 or float4", ErrConfig, c.Wire)
	}
	if err := c.Train.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if c.SyncEvery > 0 {
		if err := c.outer().Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	return nil
}

// BufferElems is the length of the buffer each round all-reduces: the
// gradient (with SyncEvery > 0 the pseudo-gradient), the loss, then
// PadElems zeros.
func (c Config) BufferElems() int { return c.Train.NumParams() + 1 + c.PadElems }

// outer is the DiLoCo outer loop of a config with SyncEvery > 0.
func (c Config) outer() train.Outer {
	return train.Outer{SyncEvery: c.SyncEvery, LR: c.OuterLR, Momentum: c.OuterMomentum}
}

// newTrainer builds the trainer of a valid config: DiLoCo with SyncEvery
// > 0.
func (c Config) newTrainer() (*train.Trainer, error) {
	if c.SyncEvery == 0 {
		return train.New(c.Train)
	}
	return train.NewDiLoCo(c.Train, c.outer())
}

// StepInfo describes one applied step (an outer step with SyncEvery > 0).
type StepInfo struct {
	Step uint64 // the step applied
	// Loss is the mean loss over the step's samples, all members' (over
	// the H inner steps with SyncEvery > 0).
	Loss      float32
	LocalLoss float32 // the same over this member's samples
	// Samples is this member's samples of the step (its weight): its part
	// of the global batch, times H with SyncEvery > 0.
	Samples int
	// Part is this member's part [start, end) of the step's global batch
	// (of each of its H global batches with SyncEvery > 0).
	Part [2]int
	// TotalWeight is the samples the applied gradient averages: B (H*B
	// with SyncEvery > 0), or fewer when a member died mid-round.
	TotalWeight float64
	Rank        int // this member's rank for the step
	// Share is this member's fraction of the step's global batch, as the
	// mesh agreed it.
	Share    float64
	Members  []string // the ring that produced the result
	Attempts int      // round attempts (more than 1 after a failure)
	// StepTime is the time since the previous step was applied (or since
	// the join), compute and all-reduce included.
	StepTime time.Duration
	// SamplesPerSec is TotalWeight / StepTime: the mesh's throughput.
	SamplesPerSec float64
	Synced        bool // false when this trainer's state is not the mesh's
	Saved         bool // a checkpoint of the state after this step was saved
}

// JoinInfo describes one join.
type JoinInfo struct {
	// Step is the entry step: the next step this member runs.
	Step    uint64
	Members []string
	// Checkpoint is the step of the checkpoint loaded, or -1 when none was.
	Checkpoint int64
	// Synced is whether the trainer's state is at Step.
	Synced bool
	// Reason is why the loop (re)joined: "start" or the node's error code.
	Reason string
}

// Result is what Run leaves behind.
type Result struct {
	// Trainer holds the final parameters (nil if Run failed before it was
	// built).
	Trainer *train.Trainer
	// Applied counts the steps this loop applied; Joins its joins (1 when
	// nothing went wrong); Saves the checkpoints handed to the node.
	Applied, Joins, Saves int
	// Synced is whether the trainer's state is the mesh's at the end.
	Synced bool
}
