package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sync/errgroup"

	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
)

const benchAllReduceHelp = `usage: ringmesh bench allreduce --local N [flags]
       ringmesh bench allreduce --data-dir DIR --world N [flags]

Measures the ring all-reduce as nccl-tests does: for each size, one warm-up
round, then --iters timed rounds (reduce "sum", wire type --dtype); prints
the median time, algbw = bytes/time and busbw = algbw*2(n-1)/n in GB/s (1e9).

--local N starts N 'ringmesh node' processes on 127.0.0.1 (default encrypted
transport) and one client per node in this process; before each round the
clients wait for each other, and a round's time is the slowest member's.

--data-dir DIR --world N runs on a live mesh: every host runs this command,
with the same flags, against its own node. Each one joins and keeps the
mesh stepping with 1-element rounds until a round has N members; from the
next step on, all of them run the same sequence of rounds (the step number
is the shared clock) and each prints its own line. A host's time includes
any wait for slower hosts to submit the round.

Progress goes to stderr; the result lines to stdout.`

// arBench is the configuration of one all-reduce benchmark run.
type arBench struct {
	sizes  sizesFlag
	iters  int
	dtype  string
	json   bool
	open   bool // local nodes run an open mesh
	stdout io.Writer
	stderr io.Writer
	pids   []int // local mode: the node processes, for CPU accounting
}

// arResult is one size's figures.
type arResult struct {
	N         int     `json:"n"`
	SizeBytes int64   `json:"size_bytes"`
	DType     string  `json:"dtype"`
	Iters     int     `json:"iters"`
	MedianS   float64 `json:"median_s"`
	AlgBW     float64 `json:"algbw_GBps"`
	BusBW     float64 `json:"busbw_GBps"`
	// NodeCPUS is the CPU time (user+system) all node processes spent per
	// timed all-reduce (local mode, Linux; 0 when unknown). On a machine
	// with fewer cores than that many seconds per median_s, the all-reduce
	// is CPU-bound.
	NodeCPUS float64 `json:"node_cpu_s,omitempty"`
}

func newARResult(n int, size int64, dtype string, times []time.Duration) arResult {
	med := median(times).Seconds()
	r := arResult{N: n, SizeBytes: size, DType: dtype, Iters: len(times), MedianS: med}
	if med > 0 {
		r.AlgBW = float64(size) / med / 1e9
		r.BusBW = r.AlgBW * 2 * float64(n-1) / float64(n)
	}
	return r
}

func (b *arBench) print(r arResult) {
	if b.json {
		out, _ := json.Marshal(r)
		fmt.Fprintln(b.stdout, string(out))
		return
	}
	fmt.Fprintf(b.stdout, "allreduce n=%d size=%s dtype=%s median_s=%.4f algbw_GBps=%.3f busbw_GBps=%.3f\n",
		r.N, formatSize(r.SizeBytes), r.DType, r.MedianS, r.AlgBW, r.BusBW)
}

func cmdBenchAllReduce(args []string, stdout, stderr io.Writer) int {
	b := &arBench{stdout: stdout, stderr: stderr}
	fs := newFlagSet("bench allreduce", benchAllReduceHelp, stderr)
	local := fs.Int("local", 0, "start N local node processes on 127.0.0.1 and benchmark them")
	dataDir := fs.String("data-dir", "", "live mode: the data dir of this host's running node")
	world := fs.Int("world", 0, "live mode: start once the mesh has this many members")
	fs.Var(&b.sizes, "size", "buffer size, repeatable or comma-separated (default 64MiB)")
	fs.IntVar(&b.iters, "iters", 10, "timed rounds per size (after one warm-up)")
	fs.StringVar(&b.dtype, "dtype", "float32", "wire type: float32, bfloat16, float16 (buffers are float32)")
	fs.BoolVar(&b.json, "json", false, "print one JSON object per size")
	fast := fs.Bool("fast-detect", false, "local nodes: pass --fast-detect (default: production failure detection)")
	fs.BoolVar(&b.open, "open", false, "local nodes: run an open mesh (--insecure-open-mesh), to measure what the mesh secret's encryption costs")
	profileDir := fs.String("profile-dir", "", "local nodes: write a CPU profile per node to DIR/node-I.pprof")
	keep := fs.Bool("keep", false, "local nodes: keep their data dirs and logs (the path is printed)")
	wait := fs.Duration("wait", 10*time.Minute, "bound on joining and waiting for the other members")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if len(b.sizes) == 0 {
		b.sizes = sizesFlag{64 << 20}
	}
	switch b.dtype {
	case "float32", "bfloat16", "float16":
	default:
		fmt.Fprintf(stderr, "ringmesh bench allreduce: --dtype %q: want float32, bfloat16 or float16\n", b.dtype)
		return 2
	}
	if b.iters < 1 {
		fmt.Fprintln(stderr, "ringmesh bench allreduce: --iters must be at least 1")
		return 2
	}
	ctx, stop := benchContext()
	defer stop()
	var err error
	switch {
	case *local > 0 && *dataDir == "":
		err = b.runLocal(ctx, *local, *fast, *profileDir, *keep, *wait)
	case *local == 0 && *dataDir != "" && *world > 0:
		err = b.runLive(ctx, *dataDir, *world, *wait)
	default:
		fmt.Fprintln(stderr, "ringmesh bench allreduce: give either --local N, or --data-dir DIR and --world N")
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh bench allreduce: %v\n", err)
		return 1
	}
	return 0
}

func (b *arBench) options() client.ReduceOptions {
	return client.ReduceOptions{Wire: b.dtype, Reduce: "sum"}
}

// runLocal benchmarks n local node processes.
func (b *arBench) runLocal(ctx context.Context, n int, fast bool, profileDir string, keep bool, wait time.Duration) error {
	cl, err := startLocal(n, nodeArgs(n, fast, b.open), profileDir, b.stderr)
	if err != nil {
		return err
	}
	cl.keep = keep
	for _, p := range cl.procs {
		b.pids = append(b.pids, p.Cmd.Process.Pid)
	}
	defer cl.stop()
	clients := make([]*client.Client, n)
	for i := range n {
		if clients[i], err = client.Dial(ctx, cl.dir(i)); err != nil {
			return err
		}
		defer clients[i].Close()
	}
	jctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	steps := make([]uint64, n)
	g, gctx := errgroup.WithContext(jctx)
	for i, c := range clients {
		g.Go(func() error {
			resp, err := joinMesh(gctx, c, fmt.Sprintf("node %d", i), b.stderr)
			if err != nil {
				return fmt.Errorf("node %d: join: %w", i, err)
			}
			if resp.MemberCount != n {
				return fmt.Errorf("node %d joined a mesh of %d members, want %d", i, resp.MemberCount, n)
			}
			steps[i] = resp.Step
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	step := steps[0]
	for i, s := range steps {
		if s != step {
			return fmt.Errorf("node %d entered at step %d, node 0 at %d", i, s, step)
		}
	}
	for _, size := range b.sizes {
		times, cpu, err := b.localSize(ctx, clients, &step, size)
		if err != nil {
			return fmt.Errorf("size %s: %w", formatSize(size), err)
		}
		r := newARResult(n, size, b.dtype, times)
		r.NodeCPUS = cpu
		fmt.Fprintf(b.stderr, "size %s: nodes used %.3f CPU-s per all-reduce (median %.4f s wall, %d cores)\n",
			formatSize(size), cpu, r.MedianS, runtime.NumCPU())
		b.print(r)
	}
	return nil
}

// localSize runs one warm-up and b.iters timed rounds of size bytes on every
// client and returns the slowest member's time of each timed round, and the
// nodes' CPU seconds per timed round.
func (b *arBench) localSize(ctx context.Context, clients []*client.Client, step *uint64, size int64) ([]time.Duration, float64, error) {
	n := len(clients)
	bufs := make([]*client.Buffer, n)
	for i, c := range clients {
		buf, err := c.NewBuffer(ctx, int(size/4))
		if err != nil {
			return nil, 0, err
		}
		defer buf.Close()
		bufs[i] = buf
	}
	var times []time.Duration
	var cpuStart, cpuPer float64
	for it := 0; it <= b.iters; it++ {
		if it == 1 {
			cpuStart = procCPU(b.pids)
		}
		if it == 0 {
			fmt.Fprintf(b.stderr, "size %s: warm-up\n", formatSize(size))
		} else {
			fmt.Fprintf(b.stderr, "size %s: iter %d/%d\n", formatSize(size), it, b.iters)
		}
		for i, buf := range bufs {
			fillConst(buf.Data, float32(i+1))
		}
		took := make([]time.Duration, n)
		start := make(chan struct{})
		g, gctx := errgroup.WithContext(ctx)
		for i, buf := range bufs {
			g.Go(func() error {
				<-start // the barrier: every client is ready
				t0 := time.Now()
				resp, err := buf.AllReduce(gctx, *step, b.options())
				took[i] = time.Since(t0)
				if err != nil {
					return fmt.Errorf("node %d: step %d: %w", i, *step, err)
				}
				if resp.Step != *step || len(resp.Members) != n {
					return fmt.Errorf("node %d: applied step %d with %d members, want step %d with %d", i, resp.Step, len(resp.Members), *step, n)
				}
				return nil
			})
		}
		close(start)
		if err := g.Wait(); err != nil {
			return nil, 0, err
		}
		*step++
		if it > 0 {
			times = append(times, slices.Max(took))
		}
		if it == b.iters && cpuStart > 0 {
			cpuPer = max(procCPU(b.pids)-cpuStart, 0) / float64(b.iters)
		}
		want := float64(n*(n+1)) / 2
		for i, buf := range bufs {
			if err := checkConst(buf.Data, want, b.dtype); err != nil {
				return nil, 0, fmt.Errorf("node %d: step %d: %w", i, *step-1, err)
			}
		}
	}
	return times, cpuPer, nil
}

// procCPU returns the user+system CPU seconds of the processes, from
// /proc/PID/stat through prometheus/procfs; 0 when any is unreadable.
func procCPU(pids []int) float64 {
	var secs float64
	for _, pid := range pids {
		p, err := procfs.NewProc(pid)
		if err != nil {
			return 0
		}
		st, err := p.Stat()
		if err != nil {
			return 0
		}
		secs += st.CPUTime()
	}
	return secs
}

// runLive benchmarks a live mesh from one host.
func (b *arBench) runLive(ctx context.Context, dataDir string, world int, wait time.Duration) error {
	c, err := client.Dial(ctx, dataDir)
	if err != nil {
		return err
	}
	defer c.Close()
	tiny, err := c.NewBuffer(ctx, 1)
	if err != nil {
		return err
	}
	defer tiny.Close()
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	resp, err := joinMesh(wctx, c, "join", b.stderr)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	step, members, err := b.waitWorld(wctx, c, tiny, resp.Step, world)
	if err != nil {
		return err
	}
	n := len(members)
	rank := slices.Index(members, c.Hello.Self)
	if rank < 0 {
		return fmt.Errorf("self %s not in the ring %v", c.Hello.Self, members)
	}
	fmt.Fprintf(b.stderr, "%d members at step %d; this host is rank %d; starting at step %d\n", n, step-1, rank, step)
	for _, size := range b.sizes {
		buf, err := c.NewBuffer(ctx, int(size/4))
		if err != nil {
			return err
		}
		times, err := b.liveSize(ctx, buf, tiny, &step, rank, n)
		buf.Close()
		if err != nil {
			return fmt.Errorf("size %s: %w", formatSize(size), err)
		}
		b.print(newARResult(n, size, b.dtype, times))
	}
	return nil
}

// waitWorld keeps the mesh stepping with 1-element rounds (so that joiners
// are admitted at step boundaries) until a round has at least world
// members. Every member applies that round, so every host leaves the loop
// at the same step: it returns the step after it and the ring. A node that
// falls out of the mesh meanwhile joins again.
func (b *arBench) waitWorld(ctx context.Context, c *client.Client, tiny *client.Buffer, step uint64, world int) (uint64, []string, error) {
	last := -1
	for {
		resp, err := tiny.AllReduce(ctx, step, client.ReduceOptions{Reduce: "sum"})
		if client.IsCode(err, localapi.CodeNotMember) || client.IsCode(err, localapi.CodeWaiting) || client.IsCode(err, localapi.CodeExcluded) {
			fmt.Fprintf(b.stderr, "step %d: %v; joining again\n", step, err)
			if resp, err = joinMesh(ctx, c, "join", b.stderr); err != nil {
				return 0, nil, fmt.Errorf("join again: %w", err)
			}
			step = resp.Step
			continue
		}
		if err != nil {
			return 0, nil, fmt.Errorf("step %d while waiting for %d members: %w", step, world, err)
		}
		if len(resp.Members) >= world {
			return resp.NextStep, resp.Members, nil
		}
		if len(resp.Members) != last {
			last = len(resp.Members)
			fmt.Fprintf(b.stderr, "waiting for %d members: %d at step %d\n", world, last, resp.Step)
		}
		step = resp.NextStep
		select {
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// liveSize runs one warm-up and b.iters timed rounds of buf on this host.
// Before each round a 1-element round on tiny is the barrier (as
// dist.barrier() in the gloo baseline), so that a host's time does not
// include waiting for hosts that are still checking the last result.
func (b *arBench) liveSize(ctx context.Context, buf, tiny *client.Buffer, step *uint64, rank, n int) ([]time.Duration, error) {
	var times []time.Duration
	want := float64(n*(n+1)) / 2
	for it := 0; it <= b.iters; it++ {
		fmt.Fprintf(b.stderr, "size %s: iter %d/%d\n", formatSize(int64(len(buf.Data))*4), it, b.iters)
		fillConst(buf.Data, float32(rank+1))
		resp, err := tiny.AllReduce(ctx, *step, client.ReduceOptions{Reduce: "sum"})
		if err != nil {
			return nil, fmt.Errorf("barrier at step %d: %w", *step, err)
		}
		if len(resp.Members) != n {
			return nil, fmt.Errorf("barrier at step %d had %d members, want %d (the mesh changed during the benchmark)", resp.Step, len(resp.Members), n)
		}
		*step++
		t0 := time.Now()
		resp, err = buf.AllReduce(ctx, *step, b.options())
		d := time.Since(t0)
		if err != nil {
			return nil, fmt.Errorf("step %d: %w", *step, err)
		}
		if resp.Step != *step || len(resp.Members) != n {
			return nil, fmt.Errorf("applied step %d with %d members, want step %d with %d (the mesh changed during the benchmark)", resp.Step, len(resp.Members), *step, n)
		}
		*step++
		if err := checkConst(buf.Data, want, b.dtype); err != nil {
			return nil, fmt.Errorf("step %d: %w", resp.Step, err)
		}
		if it > 0 {
			times = append(times, d)
		}
	}
	return times, nil
}

func fillConst(b []float32, v float32) {
	for i := range b {
		b[i] = v
	}
}

// checkConst checks that every element is want within the wire type's
// rounding (bfloat16 keeps 8 significant bits, float16 11).
func checkConst(b []float32, want float64, dtype string) error {
	tol := 1e-6
	switch dtype {
	case "bfloat16":
		tol = 1.0 / 128
	case "float16":
		tol = 1.0 / 1024
	}
	for i, v := range b {
		if math.Abs(float64(v)-want) > tol*math.Abs(want) {
			return fmt.Errorf("result[%d] = %v, want %v (%s)", i, v, want, dtype)
		}
	}
	return nil
}
