package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ringmesh/ringmesh/internal/cli"

	"github.com/ringmesh/ringmesh/demo"
	"github.com/ringmesh/ringmesh/train"
)

const demoUsage = `usage: ringmesh demo [flags]

Starts --nodes ringmesh node processes on 127.0.0.1 and a Go trainer for each
(an MLP on a synthetic task), trains --steps steps with ring all-reduce,
SIGKILLs one node at --kill-at, restarts it at --restart-at (it fetches the
newest checkpoint and rejoins), and writes OUT/summary.json and OUT/loss.png.
Exits 1 if the live nodes' final parameters differ or the loss did not fall.`

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("demo", demoUsage, stderr)
	cfg := demo.Config{Train: train.DefaultConfig()}
	fs.IntVar(&cfg.Nodes, "nodes", 4, "node processes to start")
	fs.Uint64Var(&cfg.Steps, "steps", 300, "training steps")
	fs.Uint64Var(&cfg.KillAt, "kill-at", 100, "SIGKILL a node once the mesh has applied this many steps (0: never)")
	fs.Uint64Var(&cfg.RestartAt, "restart-at", 170, "restart the killed node once the mesh has applied this many steps (0: never)")
	fs.IntVar(&cfg.KillNode, "kill-node", -1, "index of the node to kill; -1: the last one")
	fs.StringVar(&cfg.Out, "out", "demo-out", "directory for node data, summary.json and loss.png")
	fs.BoolVar(&cfg.JSON, "json", false, "print the summary as JSON on stdout (progress goes to stderr)")
	fs.IntVar(&cfg.Batch, "batch", 512, "global batch size, split among the members")
	fs.Uint64Var(&cfg.CheckpointEvery, "checkpoint-every", 50, "steps between checkpoints (joiners also get one when they enter)")
	fs.DurationVar(&cfg.Pace, "pace", 0, "extra time per step, to watch it slowly")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up (stopping every node) after this long")
	if code := cli.Parse(fs, args); code >= 0 {
		return code
	}
	if cfg.KillNode < 0 {
		cfg.KillNode = cfg.Nodes - 1
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "ringmesh demo: %v\n", err)
		return 2
	}
	bin, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh demo: %v\n", err)
		return 1
	}
	cfg.Bin = bin
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		fmt.Fprintf(stderr, "ringmesh demo: %v\n", err)
		return 1
	}
	ctx, stop := signalContext()
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	progress := stdout
	if cfg.JSON {
		progress = stderr
	}
	d := demo.New(cfg)
	runErr := d.Run(ctx, progress)
	sum := d.Summarize(runErr)
	if err := d.WriteOutputs(sum); err != nil {
		sum.Problems = append(sum.Problems, err.Error())
		sum.OK = false
	}
	if cfg.JSON {
		b, _ := json.MarshalIndent(sum, "", "  ")
		fmt.Fprintln(stdout, string(b))
	} else {
		demo.PrintSummary(stdout, sum)
	}
	if !sum.OK {
		return 1
	}
	return 0
}
