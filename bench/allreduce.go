package bench

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

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/internal/units"
	"github.com/ringmesh/ringmesh/node/client"
)

// AllReduceConfig is one all-reduce benchmark run: the buffer sizes, timed
// rounds per size, wire type, JSON lines, an open mesh for local nodes, and
// where results (Stdout) and progress (Stderr) go.
type AllReduceConfig struct {
	Sizes []int64
	Iters int
	DType string
	JSON  bool
	Open  bool
	// Lanes (local mode): "" (the default, direct lanes under TLS),
	// "trusted" (--trusted-network) or "streams" (--no-direct-lanes).
	Lanes string
	// Floor (local mode) measures this machine's floor first (MeasureFloor)
	// and reports each size's efficiency: floor CPU / the nodes' CPU.
	Floor          bool
	Stdout, Stderr io.Writer
}

func (c AllReduceConfig) bench() *arBench {
	return &arBench{sizes: c.Sizes, iters: c.Iters, dtype: c.DType, json: c.JSON, open: c.Open, lanes: c.Lanes, floor: c.Floor, stdout: c.Stdout, stderr: c.Stderr}
}

// AllReduceLocal starts n local node processes (fast: --fast-detect;
// profileDir: a CPU profile per node; keep: keep their data dirs) and
// benchmarks them, each size gloo-comparable: algbw, busbw, node CPU.
func AllReduceLocal(ctx context.Context, c AllReduceConfig, n int, fast bool, profileDir string, keep bool, wait time.Duration) error {
	return c.bench().runLocal(ctx, n, fast, profileDir, keep, wait)
}

// AllReduceLive benchmarks a running mesh from this host's node once it has
// world members (run it on every host).
func AllReduceLive(ctx context.Context, c AllReduceConfig, dataDir string, world int, wait time.Duration) error {
	return c.bench().runLive(ctx, dataDir, world, wait)
}

// arBench is the configuration of one all-reduce benchmark run.
type arBench struct {
	sizes  []int64
	iters  int
	dtype  string
	json   bool
	open   bool   // local nodes run an open mesh
	lanes  string // AllReduceConfig.Lanes
	floor  bool   // measure the floor and report efficiency
	stdout io.Writer
	stderr io.Writer
	pids   []int // local mode: the node processes, for CPU accounting
}

// AllReduceResult is one size's figures (a JSON line with --json).
type AllReduceResult struct {
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
	// CPUSPerGB is NodeCPUS per GB of buffer reduced.
	CPUSPerGB float64 `json:"node_cpu_s_per_GB,omitempty"`
	// FloorCPUS is the floor of NodeCPUS on this machine (--floor; see
	// Floor.RoundCPU), Efficiency FloorCPUS / NodeCPUS.
	FloorCPUS  float64 `json:"floor_cpu_s,omitempty"`
	Efficiency float64 `json:"efficiency,omitempty"`
	Floor      *Floor  `json:"floor,omitempty"`
	// BoundS is the lower bound of the round on the mesh's links (live
	// mode): every member sends at least the buffer, so size / the lowest
	// egress estimate among the members; OfBound is MedianS / BoundS.
	BoundS  float64 `json:"bound_s,omitempty"`
	OfBound float64 `json:"of_bound,omitempty"`
}

func newARResult(n int, size int64, dtype string, times []time.Duration) AllReduceResult {
	med := median(times).Seconds()
	r := AllReduceResult{N: n, SizeBytes: size, DType: dtype, Iters: len(times), MedianS: med}
	if med > 0 {
		r.AlgBW = float64(size) / med / 1e9
		r.BusBW = r.AlgBW * 2 * float64(n-1) / float64(n)
	}
	return r
}

func (b *arBench) print(r AllReduceResult) {
	if b.json {
		out, _ := json.Marshal(r)
		fmt.Fprintln(b.stdout, string(out))
		return
	}
	line := fmt.Sprintf("allreduce n=%d size=%s dtype=%s median_s=%.4f algbw_GBps=%.3f busbw_GBps=%.3f",
		r.N, units.Format(r.SizeBytes), r.DType, r.MedianS, r.AlgBW, r.BusBW)
	if r.CPUSPerGB > 0 {
		line += fmt.Sprintf(" node_cpu_s_per_GB=%.3f", r.CPUSPerGB)
	}
	if r.Efficiency > 0 {
		line += fmt.Sprintf(" floor_cpu_s=%.4f efficiency=%.2f", r.FloorCPUS, r.Efficiency)
	}
	if r.BoundS > 0 {
		line += fmt.Sprintf(" bound_s=%.4f of_bound=%.3f", r.BoundS, r.OfBound)
	}
	fmt.Fprintln(b.stdout, line)
}

func (b *arBench) options() client.ReduceOptions {
	return client.ReduceOptions{Wire: b.dtype, Reduce: "sum"}
}

// runLocal benchmarks n local node processes.
func (b *arBench) runLocal(ctx context.Context, n int, fast bool, profileDir string, keep bool, wait time.Duration) error {
	args := nodeArgs(n, fast, b.open)
	switch b.lanes {
	case "trusted":
		args = append(args, "--trusted-network")
	case "streams":
		args = append(args, "--no-direct-lanes")
	}
	cl, err := startLocal(n, args, profileDir, b.stderr)
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
	var floor *Floor
	if b.floor {
		fmt.Fprintln(b.stderr, "measuring this machine's floor (AES-GCM, XSalsa20, loopback TCP, float32 adds)")
		f, err := MeasureFloor(time.Second)
		if err != nil {
			return fmt.Errorf("floor: %w", err)
		}
		floor = &f
		fmt.Fprintf(b.stderr, "floor: AES-GCM %.2f GB/s, XSalsa20 %.2f GB/s, loopback TCP %.3f CPU-s/GB, adds %.2f GB/s (per core)\n",
			f.GCMBytesPerCPUS/1e9, f.XSalsaBytesPerCPUS/1e9, f.TCPCPUSPerByte*1e9, f.AddBytesPerCPUS/1e9)
	}
	for _, size := range b.sizes {
		times, cpu, err := b.localSize(ctx, clients, &step, size)
		if err != nil {
			return fmt.Errorf("size %s: %w", units.Format(size), err)
		}
		r := newARResult(n, size, b.dtype, times)
		r.NodeCPUS = cpu
		if cpu > 0 {
			r.CPUSPerGB = cpu / (float64(size) / 1e9)
		}
		if floor != nil && cpu > 0 {
			r.Floor = floor
			r.FloorCPUS = floor.RoundCPU(n, wireBytes(size, b.dtype), size, b.cipher(wireBytes(size, b.dtype)))
			r.Efficiency = r.FloorCPUS / cpu
		}
		fmt.Fprintf(b.stderr, "size %s: nodes used %.3f CPU-s per all-reduce (median %.4f s wall, %d cores)\n",
			units.Format(size), cpu, r.MedianS, runtime.NumCPU())
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
			fmt.Fprintf(b.stderr, "size %s: warm-up\n", units.Format(size))
		} else {
			fmt.Fprintf(b.stderr, "size %s: iter %d/%d\n", units.Format(size), it, b.iters)
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

// cipher is what the lanes of a round of wire bytes are encrypted with:
// lanes of at least the nodes' default --allreduce-direct-min run direct
// under TLS or, trusted, in plaintext; the others on libp2p streams,
// under the mesh secret's XSalsa20 too unless open.
func (b *arBench) cipher(wire int64) Cipher {
	cfg := allreduce.DefaultConfig() // the local nodes run its lanes and threshold
	if b.lanes != "streams" && wire/int64(cfg.Lanes) >= int64(cfg.DirectMinBytes) {
		if b.lanes == "trusted" {
			return CipherNone
		}
		return CipherTLS
	}
	if b.open {
		return CipherTLS
	}
	return CipherTLSXSalsa
}

// wireBytes is how many bytes size bytes of float32 take on the wire.
func wireBytes(size int64, dtype string) int64 {
	dt, err := allreduce.ParseDType(dtype)
	if err != nil {
		return size
	}
	return int64(dt.WireLen(int(size / 4)))
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
			return fmt.Errorf("size %s: %w", units.Format(size), err)
		}
		r := newARResult(n, size, b.dtype, times)
		if slow := slowestEgress(ctx, c); slow > 0 && r.MedianS > 0 {
			r.BoundS = float64(size) / slow
			r.OfBound = r.MedianS / r.BoundS
		}
		b.print(r)
	}
	return nil
}

// slowestEgress is the lowest egress estimate among the members of the
// node's agreed list (bytes/s), 0 when any is unknown.
func slowestEgress(ctx context.Context, c *client.Client) float64 {
	st, err := c.Status(ctx)
	if err != nil || len(st.Rounds.Plan) == 0 {
		return 0
	}
	slow := st.Rounds.Plan[0].EgressBps
	for _, p := range st.Rounds.Plan {
		slow = min(slow, p.EgressBps)
	}
	return float64(slow)
}

// waitWorld keeps the mesh stepping with 1-element rounds (so that joiners
// are admitted at step boundaries) until a round has at least world
// members. Every member applies that round, so every host leaves the loop
// at the same step: it returns the step after it and the ring. A node that
// falls out of the mesh meanwhile joins again.
func (b *arBench) waitWorld(ctx context.Context, c *client.Client, tiny *client.Buffer, step uint64, world int) (uint64, []string, error) {
	last := -1
	var ring []string
	err := client.Loop{
		Step: func(ctx context.Context) (bool, error) {
			resp, err := tiny.AllReduce(ctx, step, client.ReduceOptions{Reduce: "sum"})
			if err != nil {
				return false, err
			}
			if len(resp.Members) >= world {
				step, ring = resp.NextStep, resp.Members
				return true, nil
			}
			if len(resp.Members) != last {
				last = len(resp.Members)
				fmt.Fprintf(b.stderr, "waiting for %d members: %d at step %d\n", world, last, resp.Step)
			}
			step = resp.NextStep
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-time.After(100 * time.Millisecond):
				return false, nil
			}
		},
		Rejoin: func(ctx context.Context, cause *client.APIError) error {
			fmt.Fprintf(b.stderr, "step %d: %v; joining again\n", step, cause)
			resp, err := joinMesh(ctx, c, "join", b.stderr)
			if err != nil {
				return fmt.Errorf("join again: %w", err)
			}
			step = resp.Step
			return nil
		},
	}.Run(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("step %d while waiting for %d members: %w", step, world, err)
	}
	return step, ring, nil
}

// liveSize runs one warm-up and b.iters timed rounds of buf on this host.
// Before each round a 1-element round on tiny is the barrier (as
// dist.barrier() in the gloo baseline), so that a host's time does not
// include waiting for hosts that are still checking the last result.
func (b *arBench) liveSize(ctx context.Context, buf, tiny *client.Buffer, step *uint64, rank, n int) ([]time.Duration, error) {
	var times []time.Duration
	want := float64(n*(n+1)) / 2
	for it := 0; it <= b.iters; it++ {
		fmt.Fprintf(b.stderr, "size %s: iter %d/%d\n", units.Format(int64(len(buf.Data))*4), it, b.iters)
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
