package meshtrain

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
	"github.com/ringmesh/ringmesh/train"
)

// Run trains as a member of the mesh of the node in cfg.DataDir until the
// mesh reaches cfg.Steps, ctx ends or the node goes away. It returns the
// final trainer in every case where one was built. Errors the node answers
// with codes waiting, excluded, not_member or step_mismatch make the loop
// join again; any other error ends it.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	tr, err := cfg.newTrainer()
	if err != nil {
		return Result{}, err
	}
	c, err := dial(ctx, cfg.DataDir, cfg.BufferElems())
	if err != nil {
		return Result{Trainer: tr}, err
	}
	defer c.Close()
	return newLoop(cfg, tr, c).run(ctx)
}

// loop is one Run's state. The mesh step is authoritative: the trainer's own
// step counter equals it while synced.
type loop struct {
	cfg    Config
	tr     *train.Trainer
	c      conn
	log    *slog.Logger
	self   string
	buf    []float32       // gradient, then the local loss
	step   uint64          // the next step to run
	ring   []string        // the member list of step
	share  *localapi.Share // this member's part of step's batch; nil: by rank
	synced bool
	last   time.Time // when the previous step was applied or the join returned
	res    Result
	saved  []string // state files written, oldest first
}

func newLoop(cfg Config, tr *train.Trainer, c conn) *loop {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.CheckpointDir == "" {
		cfg.CheckpointDir = filepath.Join(cfg.DataDir, "trainer")
	}
	// The node wants absolute paths; Abs fails only without a working dir.
	if abs, err := filepath.Abs(cfg.CheckpointDir); err == nil {
		cfg.CheckpointDir = abs
	}
	return &loop{cfg: cfg, tr: tr, c: c, self: c.Self(), log: log.With("component", "meshtrain"),
		buf: make([]float32, cfg.BufferElems()), res: Result{Trainer: tr}}
}

func (l *loop) run(ctx context.Context) (Result, error) {
	if err := l.join(ctx, "start"); err != nil {
		return l.result(), err
	}
	steps := client.Loop{
		Step: func(ctx context.Context) (bool, error) {
			if l.step >= l.cfg.Steps {
				return true, nil
			}
			return false, l.runStep(ctx)
		},
		Rejoin: func(ctx context.Context, cause *client.APIError) error {
			l.log.Info("rejoining", "step", l.step, "code", cause.Code, "err", cause)
			return l.join(ctx, cause.Code)
		},
		// A step mismatch is resolved by joining again: the join takes the
		// mesh's state from a checkpoint.
		RejoinCodes: []string{localapi.CodeStepMismatch},
	}
	if err := steps.Run(ctx); err != nil {
		return l.result(), err
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	l.c.Leave(lctx) // the mesh is done with this step; a failed leave changes nothing
	return l.result(), nil
}

func (l *loop) result() Result {
	r := l.res
	r.Synced = l.synced
	return r
}

// maxUnavailable is how many joins answered "unavailable" (no checkpoint of
// the entry step in time) the loop makes before it joins without one.
const maxUnavailable = 3

// join waits until the node is a training member, loads the checkpoint it
// hands over when that brings the state to the entry step, and sets the
// member list of the entry step.
func (l *loop) join(ctx context.Context, reason string) error {
	var resp localapi.Response
	if err := os.MkdirAll(l.cfg.CheckpointDir, 0o700); err != nil {
		return err
	}
	dest := filepath.Join(l.cfg.CheckpointDir, "join-state.rmts")
	for unavailable := 0; ; {
		if unavailable == maxUnavailable {
			// Nobody saved the entry step's state: go on without it
			// (unsynced unless this trainer is at the entry step).
			dest = ""
		}
		jctx, cancel := context.WithTimeout(ctx, l.cfg.JoinTimeout)
		r, err := l.c.Join(jctx, l.tr.Step(), dest)
		cancel()
		if err == nil {
			resp = r
			break
		}
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("join: %w", err)
		case client.IsCode(err, localapi.CodeUnavailable):
			unavailable++
		case !client.IsCode(err, localapi.CodeTimeout):
			return fmt.Errorf("join: %w", err)
		}
	}
	info := JoinInfo{Step: resp.Step, Members: resp.Members, Checkpoint: -1, Reason: reason}
	if ck := resp.Checkpoint; ck != nil && ck.Path != "" && l.tr.Step() != resp.Step &&
		(ck.Step == resp.Step || ck.Step > l.tr.Step()) {
		if err := l.load(ck.Path); err != nil {
			// A bad checkpoint leaves the trainer unsynced, not stopped.
			l.log.Warn("checkpoint not loaded", "step", ck.Step, "path", ck.Path, "err", err)
		} else {
			info.Checkpoint = int64(l.tr.Step())
		}
	}
	// DiLoCo: whatever this member did since theta_global is discarded,
	// and the inner optimizer starts fresh.
	l.tr.Restart()
	l.step, l.ring, l.share = resp.Step, resp.Members, resp.Share
	l.synced = l.tr.Step() == l.step
	info.Synced = l.synced
	if !l.synced {
		l.log.Warn("trainer state is not the mesh's", "step", l.step, "state_step", l.tr.Step())
	}
	l.log.Info("joined", "step", l.step, "members", len(l.ring), "checkpoint", info.Checkpoint, "reason", reason)
	l.res.Joins++
	l.last = time.Now()
	if l.cfg.OnJoin != nil {
		l.cfg.OnJoin(info)
	}
	return nil
}

func (l *loop) load(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return l.tr.UnmarshalState(b)
}

// rank returns this member's rank and the world size of the current step,
// asking the node for the agreed list when the known one lacks this member.
func (l *loop) rank(ctx context.Context) (int, int, error) {
	if r := slices.Index(l.ring, l.self); r >= 0 {
		return r, len(l.ring), nil
	}
	resp, err := l.c.Membership(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("membership: %w", err)
	}
	l.ring = resp.Members
	if r := slices.Index(l.ring, l.self); r >= 0 {
		return r, len(l.ring), nil
	}
	return 0, 0, &client.APIError{Op: localapi.OpMembership, Code: localapi.CodeNotMember,
		Msg: fmt.Sprintf("%s not in the agreed list of %d members", l.self, len(l.ring))}
}

// runStep computes, all-reduces and applies one step.
func (l *loop) runStep(ctx context.Context) error {
	rank, world, err := l.rank(ctx)
	if err != nil {
		return err
	}
	lo, hi, share := l.part(rank, world)
	localLoss, samples := l.compute(lo, hi)
	if d := l.cfg.SampleDelay; d > 0 {
		if err := sleep(ctx, time.Duration(samples)*d); err != nil {
			return err
		}
	}
	n := copy(l.buf, l.tr.Grads())
	l.buf[n] = localLoss
	resp, err := l.c.AllReduce(ctx, l.step, l.buf, client.ReduceOptions{Wire: l.cfg.Wire, Reduce: "wmean", Weight: float64(samples), SyncEvery: int(l.cfg.SyncEvery)})
	if err != nil {
		return fmt.Errorf("all-reduce step %d: %w", l.step, err)
	}
	if resp.Step != l.step || resp.NextStep != l.step+1 {
		return fmt.Errorf("%w: all-reduce of step %d answered step %d, next %d", ErrProtocol, l.step, resp.Step, resp.NextStep)
	}
	if err := l.tr.Apply(l.buf[:n]); err != nil {
		return err
	}
	now := time.Now()
	info := StepInfo{Step: l.step, Loss: l.buf[n], LocalLoss: localLoss, Samples: samples, Part: [2]int{lo, hi},
		TotalWeight: resp.TotalWeight, Rank: rank, Share: share, Members: resp.Members, Attempts: resp.Attempts,
		StepTime: now.Sub(l.last), Synced: l.synced}
	if s := info.StepTime.Seconds(); s > 0 {
		info.SamplesPerSec = resp.TotalWeight / s
	}
	l.last = now
	l.step = resp.NextStep
	l.ring, l.share = nextList(resp.Members, resp.Joiners), resp.Share
	l.res.Applied++
	k := l.cfg.CheckpointEvery
	if l.synced && (resp.SaveCheckpoint || (k > 0 && l.step%k == 0)) {
		info.Saved = l.save(ctx)
	}
	if l.cfg.OnStep != nil {
		l.cfg.OnStep(info)
	}
	return nil
}

// part returns this member's part [lo, hi) of the step's global batch and
// its fraction of the batch: the share the mesh agreed, or by rank.
func (l *loop) part(rank, world int) (lo, hi int, share float64) {
	if s := l.share; s != nil {
		lo, hi = s.Slice(l.cfg.GlobalBatch)
		return lo, hi, float64(s.Hi-s.Lo) / float64(s.Units)
	}
	lo, hi = train.ShardBounds(l.cfg.GlobalBatch, rank, world)
	return lo, hi, 1 / float64(world)
}

// compute leaves this member's contribution to the step in the trainer's
// Grads and returns its mean loss and samples (the all-reduce weight):
// the mean gradient over part [lo, hi) of the step's global batch, or
// with DiLoCo the pseudo-gradient after H inner steps, inner step i on
// part [lo, hi) of global batch Outer.DataStep(step, i). The data order
// is the mesh's step, not the trainer's (they differ while unsynced).
func (l *loop) compute(lo, hi int) (loss float32, samples int) {
	ds, b := l.tr.Data(), l.cfg.GlobalBatch
	outer, ok := l.tr.Outer()
	if !ok {
		return l.tr.Model().ComputeGrad(ds, ds.GlobalBatch(l.step, b)[lo:hi]), hi - lo
	}
	for i := range int(outer.SyncEvery) {
		loss += l.tr.InnerStep(ds.GlobalBatch(outer.DataStep(l.step, i), b)[lo:hi])
	}
	l.tr.PseudoGrad()
	return loss / float32(outer.SyncEvery), int(outer.SyncEvery) * (hi - lo)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// nextList is the member list of the step after a round over ring that
// admitted joiners: ring and joiners ordered as the node orders lists, by
// raw peer ID bytes (not by their base58 text).
func nextList(ring, joiners []string) []string {
	if len(joiners) == 0 {
		return ring
	}
	all := append(slices.Clone(ring), joiners...)
	key := make(map[string]string, len(all))
	for _, s := range all {
		if id, err := peer.Decode(s); err == nil {
			key[s] = string(id)
		} else {
			key[s] = s
		}
	}
	slices.SortFunc(all, func(a, b string) int { return strings.Compare(key[a], key[b]) })
	return slices.Compact(all)
}
