package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/internal/systest"
	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// ledger collects every applied round of every trainer incarnation.
type ledger struct {
	mu   sync.Mutex
	runs map[string][]systest.Applied // trainer run name -> rounds in order
}

func newLedger() *ledger { return &ledger{runs: map[string][]systest.Applied{}} }

func (l *ledger) recorder(run string) func(systest.Applied) {
	return func(a systest.Applied) {
		l.mu.Lock()
		l.runs[run] = append(l.runs[run], a)
		l.mu.Unlock()
	}
}

// stepsSince counts the distinct steps applied after t with rings of
// the given size.
func (l *ledger) stepsSince(t time.Time, members int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	steps := map[uint64]bool{}
	for _, as := range l.runs {
		for i := len(as) - 1; i >= 0 && as[i].At.After(t); i-- {
			if len(as[i].Members) == members {
				steps[as[i].Step] = true
			}
		}
	}
	return len(steps)
}

// since reports whether a step with a ring of n members was applied after t.
// maxStep is the highest step any run applied (any: whether one did).
func (l *ledger) maxStep() (step uint64, any bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, as := range l.runs {
		for _, a := range as {
			if !any || a.Step > step {
				step, any = a.Step, true
			}
		}
	}
	return step, any
}

// beyond reports whether a run applied a round with members members at a
// step after from (any step if !any).
func (l *ledger) beyond(from uint64, any bool, members int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, as := range l.runs {
		for i := len(as) - 1; i >= 0; i-- {
			if any && as[i].Step <= from {
				break
			}
			if len(as[i].Members) == members {
				return true
			}
		}
	}
	return false
}

// appliedBetween counts the rounds run applied in (from, to).
func (l *ledger) appliedBetween(run string, from, to time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.runs[run] {
		if a.At.After(from) && a.At.Before(to) {
			n++
		}
	}
	return n
}

// stepsBetween returns the steps that any of runs applied in (from, to).
func (l *ledger) stepsBetween(runs []string, from, to time.Time) map[uint64]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[uint64]bool{}
	for _, run := range runs {
		for _, a := range l.runs[run] {
			if a.At.After(from) && a.At.Before(to) {
				out[a.Step] = true
			}
		}
	}
	return out
}

// check asserts agreement: for every step, every run that applied it applied
// the same bytes from the same ring; each run's steps are contiguous with no
// duplicate; the steps applied overall are contiguous from the first.
func (l *ledger) check(t *testing.T) (steps int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	type seen struct {
		digest, ring, run string
	}
	byStep := map[uint64]seen{}
	for run, as := range l.runs {
		for i, a := range as {
			if i > 0 && a.Joins == as[i-1].Joins && a.Step != as[i-1].Step+1 {
				t.Errorf("%s: step %d after %d: not contiguous (skipped or applied twice)", run, a.Step, as[i-1].Step)
			}
			ring := fmt.Sprint(a.Members)
			if s, ok := byStep[a.Step]; ok {
				if s.digest != a.Digest || s.ring != ring {
					t.Errorf("step %d: %s applied %s from %s, %s applied %s from %s", a.Step, run, a.Digest, ring, s.run, s.digest, s.ring)
				}
				continue
			}
			byStep[a.Step] = seen{a.Digest, ring, run}
		}
	}
	var all []uint64
	for k := range byStep {
		all = append(all, k)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	for i := 1; i < len(all); i++ {
		if all[i] != all[i-1]+1 {
			t.Errorf("no member applied steps %d..%d", all[i-1]+1, all[i]-1)
		}
	}
	return len(all)
}

func dumpLogsOnFailure(t *testing.T, root string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		logs, _ := filepath.Glob(filepath.Join(root, "*", "node-*.log"))
		// RINGMESH_KEEP_LOGS=DIR keeps every log whole (debug lines too),
		// for failures the tails below do not explain.
		keep := os.Getenv("RINGMESH_KEEP_LOGS")
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			if keep != "" {
				dst := filepath.Join(keep, t.Name(), filepath.Base(filepath.Dir(l)), filepath.Base(l))
				if err := os.MkdirAll(filepath.Dir(dst), 0o755); err == nil {
					os.WriteFile(dst, b, 0o644)
				}
			}
			// INFO and above: the debug lines drown the story.
			var lines []string
			for _, line := range strings.Split(string(b), "\n") {
				if !strings.Contains(line, "level=DEBUG") {
					lines = append(lines, line)
				}
			}
			out := strings.Join(lines, "\n")
			if len(out) > 16000 {
				out = out[len(out)-16000:]
			}
			t.Logf("=== %s\n%s", l, out)
		}
	})
}

// trainers runs a synthetic trainer per node process and records its rounds.
type trainers struct {
	t      *testing.T
	ctx    context.Context
	led    *ledger
	size   int
	steps  uint64
	exact  bool // systest.Synthetic.Exact: every result checked against the exact sum of its ring
	parts  int  // systest.Synthetic.Parts
	wg     sync.WaitGroup
	mu     sync.Mutex
	killed map[string]bool // runs whose node was killed: their errors are expected
	n      int
}

// waitRound waits (at most 2 minutes) until a trainer applies a round with
// a ring of the given size, after now.
func (tr *trainers) waitRound(what string, members int) {
	tr.t.Helper()
	// A round counts only at a step beyond every step applied so far: a
	// member catching up on a step decided long ago (after a heal, say)
	// applies it now, and must not pass for a fresh round.
	from, any := tr.led.maxStep()
	systest.Eventually(tr.t, 2*time.Minute, func() error {
		if tr.led.beyond(from, any, members) {
			return nil
		}
		return fmt.Errorf("%s: no round with %d members applied beyond step %d", what, members, from)
	})
}

func (tr *trainers) start(p *systest.Proc) string {
	tr.mu.Lock()
	tr.n++
	run := fmt.Sprintf("%s#%d", filepath.Base(p.Dir), tr.n)
	tr.mu.Unlock()
	tr.wg.Add(1)
	go func() {
		defer tr.wg.Done()
		s := &systest.Synthetic{Dir: p.Dir, Size: tr.size, Steps: tr.steps, Pause: 2 * time.Millisecond, Exact: tr.exact, Parts: tr.parts, Record: tr.led.recorder(run)}
		err := s.Run(tr.ctx)
		tr.mu.Lock()
		expected := tr.killed[run] || tr.ctx.Err() != nil
		tr.mu.Unlock()
		if err != nil && !expected {
			tr.t.Errorf("trainer %s: %v", run, err)
		}
	}()
	return run
}

func TestRoundsAgreeOnThreeProcesses(t *testing.T) {
	root := t.TempDir()
	dumpLogsOnFailure(t, root)
	ps := systest.Cluster(t, root, 3, "--min-members", "3")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tr := &trainers{t: t, ctx: ctx, led: newLedger(), size: 1000, steps: 30, killed: map[string]bool{}}
	for _, p := range ps {
		tr.start(p)
	}
	tr.wg.Wait()
	if n := tr.led.check(t); n != 30 {
		t.Errorf("applied %d distinct steps, want 30", n)
	}
	for run, as := range tr.led.runs {
		if len(as) != 30 || len(as[0].Members) != 3 {
			t.Errorf("%s applied %d rounds (first with %d members), want 30 with 3", run, len(as), len(as[0].Members))
		}
	}
}

// TestRoundsSurviveKills is the crash test of the rounds issue: 4 node
// processes and 4 trainers; one node, chosen at random (the first one
// included), is SIGKILLed at a random moment, mid-round or not, then
// restarted with the same data dir; it rejoins and the mesh is back to 4.
// Every applied round must agree across all trainers.
func TestRoundsSurviveKills(t *testing.T) {
	kills := 20
	if testing.Short() {
		kills = 4
	}
	root := t.TempDir()
	dumpLogsOnFailure(t, root)
	ps := systest.Cluster(t, root, 4, "--min-members", "4")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	tctx, stopTrainers := context.WithCancel(ctx)
	tr := &trainers{t: t, ctx: tctx, led: newLedger(), size: 64 << 10, steps: 1 << 40, killed: map[string]bool{}}
	runs := make([]string, len(ps))
	for i, p := range ps {
		runs[i] = tr.start(p)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	tr.waitRound("start", 4)
	for k := 0; k < kills; k++ {
		i := rng.IntN(len(ps))
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		tr.mu.Lock()
		tr.killed[runs[i]] = true
		tr.mu.Unlock()
		ps[i].Kill()
		killedAt := time.Now()
		tr.waitRound(fmt.Sprintf("kill %d of node %d", k, i), 3)
		t.Logf("kill %d: node %d; survivors applied a 3-member round after %s", k, i, time.Since(killedAt).Round(time.Millisecond))
		join := ps[(i+1)%len(ps)].Addr
		ps[i] = systest.Start(t, ps[i].Dir, "--join", join, "--min-members", "4")
		runs[i] = tr.start(ps[i])
		tr.waitRound(fmt.Sprintf("rejoin %d of node %d", k, i), 4)
		// Train a while with all four before the next kill, so that kills
		// land in a steady mesh and the run covers at least 200 steps.
		rejoined := time.Now()
		systest.Eventually(t, 90*time.Second, func() error {
			if n := tr.led.stepsSince(rejoined, 4); n < 10 {
				return fmt.Errorf("after rejoin %d: %d four-member steps, want 10", k, n)
			}
			return nil
		})
	}
	stopTrainers()
	tr.wg.Wait()
	steps := tr.led.check(t)
	t.Logf("%d kills, %d steps applied, %d trainer runs", kills, steps, len(tr.led.runs))
	if steps < 200 && !testing.Short() {
		t.Errorf("only %d steps applied, want at least 200", steps)
	}
}

// TestRetryAfterKillUsesInputs: every member submits a step and one is
// SIGKILLed while the all-reduce runs (the survivors have exchanged part
// of the data). The retry must reduce the survivors' original inputs, not
// the failed attempt's partial sums: every element must be exactly the sum
// of the inputs of the members of the ring that produced it.
func TestRetryAfterKillUsesInputs(t *testing.T) {
	const n, elems = 3, 8 << 20
	pattern := func(rank, j int) float32 { return float32((rank + 1) * (1 + j%7)) }
	for trial := 1; ; trial++ {
		if retryTrial(t, n, elems, pattern) {
			return
		}
		if trial == 5 {
			t.Fatalf("in %d trials no survivor retried the step: the retry path was not exercised", trial)
		}
		t.Logf("trial %d: the survivors' first attempt already excluded the victim; again", trial)
	}
}

// retryTrial runs one trial on a fresh cluster and reports whether a
// survivor retried the step.
func retryTrial(t *testing.T, n, elems int, pattern func(rank, j int) float32) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ps := systest.Cluster(t, t.TempDir(), n, "--min-members", fmt.Sprint(n))
	rank := map[string]int{}
	for i, p := range ps {
		rank[p.ID] = i
	}
	bufs, first := joinedTrainers(t, ctx, ps, elems)
	if first != 0 {
		t.Fatalf("the mesh formed at step %d, want 0", first)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	// round submits step on the members in who and returns their answers.
	round := func(step uint64, who []int) []localapi.Response {
		resps := make([]localapi.Response, n)
		for _, i := range who {
			for j := range bufs[i].Data {
				bufs[i].Data[j] = pattern(i, j)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				resps[i], errs[i] = bufs[i].AllReduce(ctx, step, client.ReduceOptions{Reduce: "sum"})
			}()
		}
		return resps
	}
	all := []int{0, 1, 2}
	round(0, all)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("step 0, node %d: %v", i, err)
		}
	}
	victim, survivors := n-1, []int{0, 1}
	resps := round(1, all)
	// Kill the victim while the step's all-reduce runs (32 MiB take tens of
	// milliseconds here); a kill that lands before or after it is a trial
	// without a retry.
	time.Sleep(time.Duration(20+rand.IntN(40)) * time.Millisecond)
	ps[victim].Kill()
	wg.Wait()
	retried := false
	for _, i := range survivors {
		r := resps[i]
		if errs[i] != nil {
			t.Fatalf("step 1, survivor %d: %v", i, errs[i])
		}
		if slices.Contains(r.Members, ps[victim].ID) {
			t.Logf("trial: the step was decided before the kill")
			return false
		}
		var ring []int
		for _, m := range r.Members {
			ring = append(ring, rank[m])
		}
		if slices.Contains(ring, victim) {
			t.Fatalf("step 1, survivor %d: applied with the killed member in the ring %v", i, ring)
		}
		for j, v := range bufs[i].Data {
			sum := float32(0)
			for _, k := range ring {
				sum += pattern(k, j)
			}
			if v != sum {
				t.Fatalf("step 1, survivor %d (attempts %d, ring of ranks %v): element %d = %v, want %v: the retry did not start from the inputs", i, r.Attempts, ring, j, v, sum)
			}
		}
		t.Logf("step 1, survivor %d: %d attempts, ring of %d", i, r.Attempts, len(r.Members))
		retried = retried || r.Attempts > 1
	}
	return retried
}

// TestSettingsMismatchFailsTheCall: nodes started with different
// --allreduce-lanes, or one with --trusted-network and one without, cannot
// agree on any round; every trainer's all-reduce fails with
// settings_mismatch naming the field instead of retrying until its
// deadline, and the nodes keep serving.
func TestSettingsMismatchFailsTheCall(t *testing.T) {
	cases := []struct {
		name   string
		a, b   []string
		field  string
		values int
	}{
		{"lanes", []string{"--allreduce-lanes", "2"}, []string{"--allreduce-lanes", "1"}, "lanes: got", 1000},
		// 1 MiB lanes: direct, so the plaintext ones would be used.
		{"trusted network", []string{"--trusted-network"}, nil, "trusted_network: got", 1 << 19},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			settingsMismatch(t, c.a, c.b, c.field, c.values)
		})
	}
}

func settingsMismatch(t *testing.T, argsA, argsB []string, field string, values int) {
	root := t.TempDir()
	a := systest.Start(t, filepath.Join(root, "a"), append([]string{"--min-members", "2"}, argsA...)...)
	b := systest.Start(t, filepath.Join(root, "b"), append([]string{"--min-members", "2", "--join", a.Addr}, argsB...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bufs, step := joinedTrainers(t, ctx, []*systest.Proc{a, b}, values)
	errs := reduceAll(ctx, bufs, step)
	for i, err := range errs {
		if !client.IsCode(err, localapi.CodeSettingsMismatch) || !strings.Contains(err.Error(), field) {
			t.Errorf("trainer %d: got %v, want settings_mismatch naming %q", i, err, field)
		}
		if testing.Verbose() {
			t.Logf("trainer %d: %v", i, err)
		}
	}
	for _, p := range []*systest.Proc{a, b} {
		if _, err := systest.Status(p.Dir); err != nil {
			t.Errorf("node %s after the mismatch: %v", p.Dir, err)
		}
	}
}

// joinedTrainers connects one trainer to each node, gives it a buffer of
// elems float32s and joins them all at once (a mesh formed by all of them:
// start the nodes with --min-members len(ps)); it returns the buffers and
// the first step. The clients close when the test ends.
func joinedTrainers(t *testing.T, ctx context.Context, ps []*systest.Proc, elems int) ([]*client.Buffer, uint64) {
	t.Helper()
	bufs := make([]*client.Buffer, len(ps))
	steps := make([]uint64, len(ps))
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		c, err := client.Dial(ctx, p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if bufs[i], err = c.NewBuffer(ctx, elems); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.JoinWait(ctx, 0, nil)
			steps[i], errs[i] = resp.Step, err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("trainer %d: join: %v", i, err)
		}
		if steps[i] != steps[0] {
			t.Fatalf("trainer %d joined at step %d, trainer 0 at %d", i, steps[i], steps[0])
		}
	}
	return bufs, steps[0]
}

// TestDirectLanesInStatus: two node processes reduce a buffer whose lanes
// are large enough for direct connections; the result is right, and each
// node's status says its lanes ran direct under TLS, none fell back.
func TestDirectLanesInStatus(t *testing.T) {
	root := t.TempDir()
	a := systest.Start(t, filepath.Join(root, "a"), "--min-members", "2")
	b := systest.Start(t, filepath.Join(root, "b"), "--min-members", "2", "--join", a.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	procs := []*systest.Proc{a, b}
	bufs, step := joinedTrainers(t, ctx, procs, 1<<19) // 2 MiB: two 1 MiB lanes
	for i, buf := range bufs {
		for j := range buf.Data {
			buf.Data[j] = float32(i + 1)
		}
	}
	errs := reduceAll(ctx, bufs, step)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("trainer %d: %v", i, err)
		}
		if got := bufs[i].Data[len(bufs[i].Data)-1]; got != 3 {
			t.Errorf("trainer %d: last element %v, want 3", i, got)
		}
	}
	for _, p := range procs {
		st, err := systest.Status(p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		if l := st.Lanes; l.Mode != allreduce.LaneModeTLS || l.Direct < 2 || l.Fallback != 0 {
			t.Errorf("node %s: lanes %+v, want mode tls, at least 2 direct, no fallback", p.Dir, l)
		}
	}
}

// reduceAll runs every buffer's all-reduce (sum) of step at once and
// returns their errors.
func reduceAll(ctx context.Context, bufs []*client.Buffer, step uint64) []error {
	var wg sync.WaitGroup
	errs := make([]error, len(bufs))
	for i, buf := range bufs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = buf.AllReduce(ctx, step, client.ReduceOptions{Reduce: "sum"})
		}()
	}
	wg.Wait()
	return errs
}
