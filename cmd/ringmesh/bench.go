package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ringmesh/ringmesh/internal/cli"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/bench"
	"github.com/ringmesh/ringmesh/internal/units"
)

const benchHelp = `usage: ringmesh bench <allreduce|recovery|checkpoint|train> [flags]

  allreduce   all-reduce bandwidth (nccl-tests algbw/busbw), on N local node
              processes (--local N) or on a live mesh (--data-dir DIR --world N)
  recovery    time from a node's SIGKILL to the survivors' next applied round
  checkpoint  time for a fresh node to fetch a checkpoint from N-1 providers
  train       mixed hardware: trainers at different speeds, the mesh's
              samples/s against the sum of what each does alone

Run 'ringmesh bench <name> --help' for its flags.`

func cmdBench(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, benchHelp)
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "allreduce":
		return cmdBenchAllReduce(rest, stdout, stderr)
	case "recovery":
		return cmdBenchRecovery(rest, stdout, stderr)
	case "checkpoint":
		return benchCheckpoint(rest, stdout, stderr)
	case "train":
		return cmdBenchTrain(rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, benchHelp)
		return 0
	}
	fmt.Fprintf(stderr, "ringmesh bench: unknown benchmark %q\n\n%s\n", name, benchHelp)
	return 2
}

const benchAllReduceHelp = `usage: ringmesh bench allreduce --local N [flags]
       ringmesh bench allreduce --data-dir DIR --world N [flags]

Measures the ring all-reduce as nccl-tests does: for each size, one warm-up
round, then --iters timed rounds (reduce "sum", wire type --dtype); prints
the median time, algbw = bytes/time and busbw = algbw*2(n-1)/n in GB/s (1e9).

--local N starts N 'ringmesh node' processes on 127.0.0.1 (default encrypted
transport) and one client per node in this process; before each round the
clients wait for each other, and a round's time is the slowest member's.
It also prints the node processes' CPU-seconds per GB reduced; --floor
first measures this machine's floor (AES-GCM, the mesh secret's XSalsa20,
loopback TCP, float32 adds, per core) and prints efficiency = floor CPU /
the nodes' CPU for each size.

--data-dir DIR --world N runs on a live mesh: every host runs this command,
with the same flags, against its own node. Each one joins and keeps the
mesh stepping with 1-element rounds until a round has N members; from the
next step on, all of them run the same sequence of rounds (the step number
is the shared clock) and each prints its own line. A host's time includes
any wait for slower hosts to submit the round.

Progress goes to stderr; the result lines to stdout.`

func cmdBenchAllReduce(args []string, stdout, stderr io.Writer) int {
	var sizes units.Float32Sizes
	b := bench.AllReduceConfig{Stdout: stdout, Stderr: stderr}
	fs := cli.NewFlagSet("bench allreduce", benchAllReduceHelp, stderr)
	local := fs.Int("local", 0, "start N local node processes on 127.0.0.1 and benchmark them")
	dataDir := fs.String("data-dir", "", "live mode: the data dir of this host's running node")
	world := fs.Int("world", 0, "live mode: start once the mesh has this many members")
	fs.Var(&sizes, "size", "buffer size, repeatable or comma-separated (default 64MiB)")
	fs.IntVar(&b.Iters, "iters", 10, "timed rounds per size (after one warm-up)")
	fs.StringVar(&b.DType, "dtype", "float32", "wire type: float32, bfloat16, float16, int8 or float4 (block-quantized; buffers are float32)")
	fs.BoolVar(&b.JSON, "json", false, "print one JSON object per size")
	fast := fs.Bool("fast-detect", false, "local nodes: pass --fast-detect (default: production failure detection)")
	fs.BoolVar(&b.Open, "open", false, "local nodes: run an open mesh (--insecure-open-mesh), to measure what the mesh secret's encryption costs")
	fs.StringVar(&b.Lanes, "lanes", "", "local nodes: \"\" (direct lanes under TLS, the default), trusted (--trusted-network: plaintext lanes) or streams (--no-direct-lanes)")
	fs.BoolVar(&b.Floor, "floor", false, "local nodes: first measure this machine's floor (AES-GCM, XSalsa20, loopback TCP, float32 adds; 4 s) and print each size's efficiency = floor CPU / the nodes' CPU")
	profileDir := fs.String("profile-dir", "", "local nodes: write a CPU profile per node to DIR/node-I.pprof")
	keep := fs.Bool("keep", false, "local nodes: keep their data dirs and logs (the path is printed)")
	wait := fs.Duration("wait", 10*time.Minute, "bound on joining and waiting for the other members")
	if code := cli.Parse(fs, args); code >= 0 {
		return code
	}
	if b.Lanes != "" && b.Lanes != "trusted" && b.Lanes != "streams" {
		fmt.Fprintf(stderr, "ringmesh bench allreduce: --lanes %q: want trusted or streams (or nothing)\n", b.Lanes)
		return 2
	}
	b.Sizes = sizes
	if len(b.Sizes) == 0 {
		b.Sizes = []int64{64 << 20}
	}
	if _, err := allreduce.ParseDType(b.DType); err != nil {
		fmt.Fprintf(stderr, "ringmesh bench allreduce: --dtype %q: want float32, bfloat16, float16, int8 or float4\n", b.DType)
		return 2
	}
	if b.Iters < 1 {
		fmt.Fprintln(stderr, "ringmesh bench allreduce: --iters must be at least 1")
		return 2
	}
	ctx, stop := signalContext()
	defer stop()
	var err error
	switch {
	case *local > 0 && *dataDir == "":
		err = bench.AllReduceLocal(ctx, b, *local, *fast, *profileDir, *keep, *wait)
	case *local == 0 && *dataDir != "" && *world > 0:
		err = bench.AllReduceLive(ctx, b, *dataDir, *world, *wait)
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

const benchTrainHelp = `usage: ringmesh bench train --local N --speeds S1,...,SN [flags]

Mixed hardware on one machine: starts N local 'ringmesh node' processes and
one Go trainer per node (the demo's model), trainer i slowed to relative
speed Si by sleeping --sample-delay/Si per sample of its share. First each
trainer's standalone samples/s is measured (alone, the whole batch, same
delay); then the mesh trains --steps steps and the second half is timed.
Prints
  train n=N speeds=... batch=B steps=K sync_every=H mesh_samples_per_s=...
    standalone_sum=... ratio=... equal_shares_bound=... shares=...
    wire=W allreduce_bytes_per_step=...
ratio is mesh samples/s over the sum of the standalone figures (the target
is 0.9); equal_shares_bound is what equal shares could reach at best (n
times the slowest over the sum); shares are the members' shares of the
last step, as the mesh settled them; allreduce_bytes_per_step is the
all-reduced buffer's size on the wire over the steps one round covers.

Every step costs one round (about 12 ms for 4 local nodes on 2 cores) on
top of the slowest member's compute, so the ratio depends on the step
time: the default (a 1024-sample global batch, 4 ms a sample at speed 1)
gives a step of about 0.5 s at speeds 1,1,2,4, as real models take; a
smaller --batch or --sample-delay shows the round's cost.

--sync-every H trains DiLoCo-style: each trainer takes H steps alone on
its share of H global batches, then one round averages the members'
parameter deltas and every member takes the same outer Nesterov step
(--outer-lr, momentum 0.9). A round then covers H steps, so its cost and
its bytes are spread over H steps; --steps still counts steps (the mesh
runs steps/H rounds, at least 4) and --late counts rounds.`

func cmdBenchTrain(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("bench train", benchTrainHelp, stderr)
	n := fs.Int("local", 4, "local node processes")
	speeds := fs.Float64Slice("speeds", nil, "relative trainer speeds, one per node (e.g. 1,1,2,4; default all 1)")
	batch := fs.Int("batch", 1024, "global batch")
	steps := fs.Uint64("steps", 80, "training steps (the second half of the rounds is timed)")
	delay := fs.Duration("sample-delay", 4*time.Millisecond, "per-sample delay of a speed-1 trainer (4ms: a 1024-sample step takes it 4 s alone)")
	syncEvery := fs.Uint64("sync-every", 0, "DiLoCo: one round after every H steps each trainer takes alone (0: a round every step)")
	outerLR := fs.Float32("outer-lr", 0.7, "DiLoCo's outer learning rate (with --sync-every)")
	wire := fs.String("wire", "float32", "all-reduce wire format: float32, bfloat16, float16")
	asJSON := fs.Bool("json", false, "print one JSON object")
	keep := fs.Bool("keep", false, "keep the nodes' data dirs and logs (the path is printed)")
	trace := fs.String("trace", "", "write every trainer's steps to FILE as CSV (t_s,member,step,share,samples,step_time_s,members)")
	plotFile := fs.String("plot", "", "draw the members' shares and the step time by step into FILE (PNG)")
	late := fs.Uint64("late", 0, "start the last trainer once the others applied this many rounds (it joins the running mesh)")
	if code := cli.Parse(fs, args); code >= 0 {
		return code
	}
	if len(*speeds) == 0 {
		*speeds = make([]float64, *n)
		for i := range *speeds {
			(*speeds)[i] = 1
		}
	}
	cfg := bench.TrainConfig{Speeds: *speeds, SampleDelay: *delay, Batch: *batch, Steps: *steps, SyncEvery: *syncEvery,
		OuterLR: *outerLR, Wire: *wire, Late: *late, Keep: *keep, Stderr: stderr}
	if len(*speeds) != *n {
		fmt.Fprintf(stderr, "ringmesh bench train: %d --speeds for --local %d\n", len(*speeds), *n)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "ringmesh bench train: %v\n", err)
		return 2
	}
	var files []*os.File
	for _, out := range []struct {
		path string
		w    *io.Writer
	}{{*trace, &cfg.Trace}, {*plotFile, &cfg.Plot}} {
		if out.path == "" {
			continue
		}
		f, err := os.Create(out.path)
		if err != nil {
			fmt.Fprintf(stderr, "ringmesh bench train: %v\n", err)
			return 1
		}
		defer f.Close()
		files = append(files, f)
		*out.w = f
	}
	ctx, stop := signalContext()
	defer stop()
	res, err := bench.Train(ctx, cfg)
	for _, f := range files {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh bench train: %v\n", err)
		return 1
	}
	return printResult(stdout, *asJSON, res)
}

// printResult prints a benchmark's result: its line, or one JSON object.
func printResult(stdout io.Writer, asJSON bool, res fmt.Stringer) int {
	if asJSON {
		out, _ := json.Marshal(res)
		fmt.Fprintln(stdout, string(out))
	} else {
		fmt.Fprintln(stdout, res)
	}
	return 0
}

const benchRecoveryHelp = `usage: ringmesh bench recovery --local N [flags]

Starts N local 'ringmesh node' processes (N >= 3) and one trainer loop per
node that all-reduces a buffer continuously. Each trial SIGKILLs one node,
chosen at random (seeded), a random delay after a round started, and
measures the time from the kill to the moment the last survivor got the
result of the first round whose ring excludes the killed node (the retried
round, normally). The node is then restarted on its data dir and the trial
ends when all N members apply a round together again.

Prints: recovery n=N size=S kills=K median_kill_to_next_round_s=... max_s=...
Nodes use production failure detection unless --fast-detect.`

func cmdBenchRecovery(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("bench recovery", benchRecoveryHelp, stderr)
	n := fs.Int("local", 4, "local node processes (at least 3: the survivors must hold a majority)")
	var sizes units.Float32Sizes
	fs.Var(&sizes, "size", "buffer size (default 64MiB)")
	kills := fs.Int("kills", 10, "trials: one SIGKILL and restart each")
	seed := fs.Uint64("seed", 1, "seed of the victim and kill-delay choices")
	fast := fs.Bool("fast-detect", false, "pass --fast-detect to the nodes (default: production failure detection)")
	open := fs.Bool("open", false, "run an open mesh (--insecure-open-mesh), to measure what the mesh secret's encryption costs")
	asJSON := fs.Bool("json", false, "print one JSON object")
	keep := fs.Bool("keep", false, "keep the nodes' data dirs and logs (the path is printed)")
	if code := cli.Parse(fs, args); code >= 0 {
		return code
	}
	if len(sizes) == 0 {
		sizes = units.Float32Sizes{64 << 20}
	}
	if *n < 3 || len(sizes) != 1 || *kills < 1 {
		fmt.Fprintln(stderr, "ringmesh bench recovery: want --local N >= 3, one --size and --kills >= 1")
		return 2
	}
	ctx, stop := signalContext()
	defer stop()
	res, err := bench.Recovery(ctx, bench.RecoveryConfig{N: *n, Size: sizes[0], Kills: *kills, Seed: *seed,
		Fast: *fast, Open: *open, Keep: *keep, Stderr: stderr})
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh bench recovery: %v\n", err)
		return 1
	}
	return printResult(stdout, *asJSON, res)
}

const benchCheckpointHelp = `usage: ringmesh bench checkpoint --local N [--size 1GiB] [--json]

Starts N-1 local node processes (127.0.0.1) with --replicas N-1 and no
replication rate limit; node 0 saves a checkpoint of --size random bytes and
the bench waits until all N-1 hold it. Then a fresh node N fetches it from the
N-1 providers at once. Prints
  checkpoint providers=N-1 size=SIZE fetch_s=... GBps=...
where fetch_s is the fetch alone (every chunk verified and written to the
fetcher's store), not the export to a file that follows.`

func benchCheckpoint(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("bench checkpoint", benchCheckpointHelp, stderr)
	local := fs.Int("local", 4, "nodes in all: N-1 providers and one fresh fetcher")
	var size units.Size = 1 << 30
	fs.Var(&size, "size", "checkpoint size, e.g. 256MiB, 1GiB")
	asJSON := fs.Bool("json", false, "print one JSON object")
	wait := fs.Duration("timeout", 20*time.Minute, "give up after this long")
	if code := cli.Parse(fs, args); code >= 0 {
		return code
	}
	if *local < 2 || size <= 0 {
		fmt.Fprintln(stderr, "ringmesh bench checkpoint: need --local >= 2 and a positive --size")
		return 2
	}
	ctx, stop := signalContext()
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	r, err := bench.Checkpoint(ctx, *local, int64(size), stderr)
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh bench checkpoint: %v\n", err)
		return 1
	}
	return printResult(stdout, *asJSON, r)
}
