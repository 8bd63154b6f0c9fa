package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/ringmesh/ringmesh/internal/units"
	"github.com/ringmesh/ringmesh/node/client"
)

type recApplied struct {
	step    uint64
	members []string
	at      time.Time
}

// recBench is one recovery benchmark run. Its mutex guards the records the
// trainer loops write and the main loop polls.
type recBench struct {
	n      int
	size   int64
	open   bool // an open mesh (no secret)
	stderr io.Writer

	mu      sync.Mutex
	applied [][]recApplied // by node: rounds applied by its current loop
	started []time.Time    // by node: when its loop last submitted a round
	expect  []bool         // by node: its loop's end is expected (node killed)
	err     error          // the first unexpected loop error
	wg      sync.WaitGroup
}

// RecoveryConfig is one recovery benchmark run: N local nodes all-reducing
// Size-byte buffers, Kills trials (one SIGKILL and restart each, victims
// and delays from Seed), production failure detection unless Fast, a
// private mesh unless Open; Keep keeps the data dirs; progress to Stderr.
type RecoveryConfig struct {
	N      int
	Size   int64
	Kills  int
	Seed   uint64
	Fast   bool
	Open   bool
	Keep   bool
	Stderr io.Writer
}

// Recovery runs the benchmark and returns its figures.
func Recovery(ctx context.Context, c RecoveryConfig) (RecoveryResult, error) {
	r := &recBench{n: c.N, size: c.Size, open: c.Open, stderr: c.Stderr}
	trials, smaller, err := r.run(ctx, c.Kills, c.Seed, c.Fast, c.Keep)
	if err != nil {
		return RecoveryResult{}, err
	}
	res := RecoveryResult{N: c.N, SizeBytes: c.Size, Kills: c.Kills, Fast: c.Fast,
		MedianS: median(trials).Seconds(), MaxS: slices.Max(trials).Seconds(), SurvivorRoundS: median(smaller).Seconds()}
	for _, d := range trials {
		res.TrialsS = append(res.TrialsS, d.Seconds())
	}
	return res, nil
}

// RecoveryResult is the figures of a run.
type RecoveryResult struct {
	N         int       `json:"n"`
	SizeBytes int64     `json:"size_bytes"`
	Kills     int       `json:"kills"`
	Fast      bool      `json:"fast_detect"`
	MedianS   float64   `json:"median_kill_to_next_round_s"`
	MaxS      float64   `json:"max_s"`
	TrialsS   []float64 `json:"trials_s"`
	// SurvivorRoundS is the median duration of the survivors' rounds
	// (n-1 members) while the killed node was away: the part of a
	// kill-to-next-round time that is the retried round itself.
	SurvivorRoundS float64 `json:"survivor_round_median_s"`
}

// String is the result line `ringmesh bench recovery` prints.
func (r RecoveryResult) String() string {
	return fmt.Sprintf("recovery n=%d size=%s kills=%d median_kill_to_next_round_s=%.3f max_s=%.3f",
		r.N, units.Format(r.SizeBytes), r.Kills, r.MedianS, r.MaxS)
}

// run starts the nodes and loops and runs the trials; it returns each
// trial's kill-to-next-round time, and the durations of the survivors'
// rounds (n-1 members) while the killed node was away.
func (r *recBench) run(ctx context.Context, kills int, seed uint64, fast, keep bool) (trials, smaller []time.Duration, err error) {
	cl, err := startLocal(r.n, nodeArgs(r.n, fast, r.open), "", r.stderr)
	if err != nil {
		return nil, nil, err
	}
	cl.keep = keep
	defer cl.stop()
	lctx, stopLoops := context.WithCancel(ctx)
	defer func() {
		stopLoops()
		r.wg.Wait()
	}()
	r.applied = make([][]recApplied, r.n)
	r.started = make([]time.Time, r.n)
	r.expect = make([]bool, r.n)
	cancels := make([]context.CancelFunc, r.n)
	for i := range r.n {
		cancels[i] = r.startLoop(lctx, i, cl.dir(i))
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	for range 2 { // two full rounds: the first kill's delay needs a round time
		if err := r.waitFull(ctx, time.Now(), 3*time.Minute); err != nil {
			return nil, nil, fmt.Errorf("start: %w", err)
		}
	}
	for k := 1; k <= kills; k++ {
		victim := rng.IntN(r.n)
		roundTime := r.roundTime()
		inRound, err := r.afterRoundStart(ctx, (victim+1)%r.n, time.Duration(rng.Float64()*float64(roundTime)))
		if err != nil {
			return nil, nil, err
		}
		r.mu.Lock()
		r.expect[victim] = true
		r.mu.Unlock()
		victimID := cl.procs[victim].ID
		killedAt := time.Now()
		cl.procs[victim].Kill()
		cancels[victim]()
		took, err := r.waitRecovered(ctx, victim, victimID, killedAt, 2*time.Minute)
		if err != nil {
			return nil, nil, fmt.Errorf("trial %d (node %d killed): %w", k, victim, err)
		}
		trials = append(trials, took)
		since := time.Now()
		if err := cl.restart(victim, (victim+1)%r.n); err != nil {
			return nil, nil, err
		}
		r.mu.Lock()
		r.applied[victim], r.expect[victim] = nil, false
		r.mu.Unlock()
		cancels[victim] = r.startLoop(lctx, victim, cl.dir(victim))
		if err := r.waitFull(ctx, since, 3*time.Minute); err != nil {
			return nil, nil, fmt.Errorf("trial %d: rejoin of node %d: %w", k, victim, err)
		}
		gaps := r.gaps((victim+1)%r.n, r.n-1, killedAt)
		smaller = append(smaller, gaps...)
		fmt.Fprintf(r.stderr, "kill %d/%d at %s: node %d, %.3fs into a round (%d-member rounds ~%.3fs); survivors' next round after %.3fs (%d-member rounds ~%.3fs); back to %d after %.1fs\n",
			k, kills, killedAt.UTC().Format("15:04:05.000"), victim, inRound.Seconds(), r.n, roundTime.Seconds(), took.Seconds(), r.n-1, median(gaps).Seconds(), r.n, time.Since(since).Seconds())
	}
	return trials, smaller, nil
}

// gaps returns the times between consecutive rounds of node i's loop that
// both had members members, after since.
func (r *recBench) gaps(i, members int, since time.Time) []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []time.Duration
	as := r.applied[i]
	for j := 1; j < len(as); j++ {
		if as[j-1].at.After(since) && len(as[j-1].members) == members && len(as[j].members) == members {
			out = append(out, as[j].at.Sub(as[j-1].at))
		}
	}
	return out
}

// startLoop starts the trainer loop of node i; the returned func stops it.
func (r *recBench) startLoop(ctx context.Context, i int, dir string) context.CancelFunc {
	ctx, cancel := context.WithCancel(ctx)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := r.loop(ctx, i, dir)
		r.mu.Lock()
		defer r.mu.Unlock()
		if err != nil && !r.expect[i] && ctx.Err() == nil && r.err == nil {
			r.err = fmt.Errorf("node %d trainer: %w", i, err)
		}
	}()
	return cancel
}

// loop is a trainer that all-reduces (mean) its buffer round after round,
// joining again when the node says so.
func (r *recBench) loop(ctx context.Context, i int, dir string) error {
	c, err := client.Dial(ctx, dir)
	if err != nil {
		return err
	}
	defer c.Close()
	buf, err := c.NewBuffer(ctx, int(r.size/4))
	if err != nil {
		return err
	}
	defer buf.Close()
	fillConst(buf.Data, float32(i+1))
	who := fmt.Sprintf("node %d", i)
	resp, err := joinMesh(ctx, c, who, r.stderr)
	if err != nil {
		return err
	}
	step := resp.Step
	return client.Loop{
		Step: func(ctx context.Context) (bool, error) {
			r.mu.Lock()
			r.started[i] = time.Now()
			r.mu.Unlock()
			resp, err := buf.AllReduce(ctx, step, client.ReduceOptions{Reduce: "mean"})
			if err != nil {
				return false, err
			}
			r.mu.Lock()
			r.applied[i] = append(r.applied[i], recApplied{step: resp.Step, members: resp.Members, at: time.Now()})
			r.mu.Unlock()
			step = resp.NextStep
			return false, nil
		},
		Rejoin: func(ctx context.Context, cause *client.APIError) error {
			fmt.Fprintf(r.stderr, "%s: %v; joining again\n", who, cause)
			resp, err := joinMesh(ctx, c, who, r.stderr)
			step = resp.Step
			return err
		},
	}.Run(ctx)
}

// poll calls cond every 5 ms until it reports done, a loop fails, ctx ends
// or d passes. Times are measured from the loops' records, not from polls.
func (r *recBench) poll(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	for {
		r.mu.Lock()
		ok, err := cond(), r.err
		r.mu.Unlock()
		switch {
		case err != nil:
			return err
		case ok:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("%s: not within %s", what, d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitFull waits until every node's loop applied a round of all n members
// after since.
func (r *recBench) waitFull(ctx context.Context, since time.Time, d time.Duration) error {
	return r.poll(ctx, d, fmt.Sprintf("all %d members applying a round together", r.n), func() bool {
		for _, as := range r.applied {
			if !slices.ContainsFunc(as, func(a recApplied) bool { return a.at.After(since) && len(a.members) == r.n }) {
				return false
			}
		}
		return true
	})
}

// roundTime estimates a round's duration from the last full rounds of the
// loop with the longest record.
func (r *recBench) roundTime() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var as []recApplied
	for _, a := range r.applied {
		if len(a) > len(as) {
			as = a
		}
	}
	var gaps []time.Duration
	for j := len(as) - 1; j > 0 && len(gaps) < 5; j-- {
		if len(as[j].members) == r.n && len(as[j-1].members) == r.n {
			gaps = append(gaps, as[j].at.Sub(as[j-1].at))
		}
	}
	if len(gaps) == 0 {
		return 100 * time.Millisecond
	}
	return median(gaps)
}

// afterRoundStart waits until node i's loop submits a new round, then
// sleeps delay; it returns how long after that submission it returned.
func (r *recBench) afterRoundStart(ctx context.Context, i int, delay time.Duration) (time.Duration, error) {
	r.mu.Lock()
	prev := r.started[i]
	r.mu.Unlock()
	var at time.Time
	err := r.poll(ctx, time.Minute, fmt.Sprintf("node %d starting a round", i), func() bool {
		at = r.started[i]
		return at.After(prev)
	})
	if err != nil {
		return 0, err
	}
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(time.Until(at.Add(delay))):
	}
	return time.Since(at), nil
}

// waitRecovered waits until every survivor applied a round whose ring
// excludes victimID, after killedAt; it returns the time from killedAt to
// the last survivor's result.
func (r *recBench) waitRecovered(ctx context.Context, victim int, victimID string, killedAt time.Time, d time.Duration) (time.Duration, error) {
	var took time.Duration
	err := r.poll(ctx, d, "survivors applying a round without the killed node", func() bool {
		took = 0
		for j, as := range r.applied {
			if j == victim {
				continue
			}
			k := slices.IndexFunc(as, func(a recApplied) bool {
				return a.at.After(killedAt) && !slices.Contains(a.members, victimID)
			})
			if k < 0 {
				return false
			}
			took = max(took, as[k].at.Sub(killedAt))
		}
		return true
	})
	return took, err
}
