package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// overlapResult is one host's line of bench/ddp_overlap.py --json.
type overlapResult struct {
	Overlap   int     `json:"overlap"`
	Params    int     `json:"params"`
	StepS     float64 `json:"step_s"`
	ComputeS  float64 `json:"compute_s"`
	StepCallS float64 `json:"step_call_s"`
	Parts     int     `json:"parts"`
	Early     int     `json:"early"`
}

// BenchmarkLabDDPOverlap is the PyTorch issue's overlap figure: 2 lab
// hosts, egress shaped to RINGMESH_LAB_RATE (default 500 Mbit/s), one node
// each, and one Python trainer per node (bench/ddp_overlap.py: a 25M
// parameter MLP in ringmesh.torch.DistributedDataParallel, one torch
// thread) whose backward takes about as long as the all-reduce of its 100
// MB of gradients over that link. Runs alternate --no-overlap and
// --overlap (fresh nodes each, twice each); it reports the median step
// time of each (the slower host's) and their ratio. The trainers run in
// the root namespace: they reach their nodes through the data dir's unix
// socket, only the nodes' traffic crosses the shaped links.
// RINGMESH_OVERLAP_BATCH (default 256) sets the global batch.
//
//	go test -run '^$' -bench LabDDPOverlap -benchtime 1x ./cmd/ringmesh/
func BenchmarkLabDDPOverlap(b *testing.B) {
	if err := exec.Command("/usr/bin/python3", "-c", "import torch.distributed").Run(); err != nil {
		b.Skip("the overlap benchmark needs python3-torch (apt-get install -y python3-torch)")
	}
	rate := int64(500e6)
	if s := os.Getenv("RINGMESH_LAB_RATE"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			b.Fatalf("RINGMESH_LAB_RATE=%q: %v", s, err)
		}
		rate = int64(v)
	}
	batch := "256"
	if s := os.Getenv("RINGMESH_OVERLAP_BATCH"); s != "" {
		batch = s
	}
	const n = 2
	lab := shapedLab(b, n, rate)
	script, err := filepath.Abs(filepath.Join("..", "..", "bench", "ddp_overlap.py"))
	if err != nil {
		b.Fatal(err)
	}
	times := map[int][]float64{}
	last := map[int]overlapResult{}
	for range 2 {
		for _, overlap := range []int{0, 1} {
			ps := labNodes(b, lab, n)
			waitLinks(b, ps)
			flag := "--no-overlap"
			if overlap == 1 {
				flag = "--overlap"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			outs := make([]bytes.Buffer, n)
			errs := make([]bytes.Buffer, n)
			cmds := make([]*exec.Cmd, n)
			for i, p := range ps {
				cmds[i] = exec.CommandContext(ctx, "/usr/bin/python3", script, "--data-dir", p.Dir, flag, "--json", "--batch", batch)
				cmds[i].Env = append(os.Environ(), "OMP_NUM_THREADS=1")
				cmds[i].Stdout, cmds[i].Stderr = &outs[i], &errs[i]
				if err := cmds[i].Start(); err != nil {
					b.Fatal(err)
				}
			}
			worst := overlapResult{}
			for i, c := range cmds {
				if err := c.Wait(); err != nil {
					b.Fatalf("trainer %d (%s): %v\n%s", i, flag, err, errs[i].String())
				}
				var r overlapResult
				if err := json.Unmarshal(bytes.TrimSpace(outs[i].Bytes()), &r); err != nil {
					b.Fatalf("trainer %d: %v: %q", i, err, outs[i].String())
				}
				if r.StepS > worst.StepS {
					worst = r
				}
			}
			cancel()
			for _, p := range ps {
				p.Stop(30 * time.Second)
			}
			b.Logf("overlap=%d step_s=%.3f compute_s=%.3f step_call_s=%.3f parts=%d early=%d", overlap, worst.StepS, worst.ComputeS, worst.StepCallS, worst.Parts, worst.Early)
			times[overlap] = append(times[overlap], worst.StepS)
			last[overlap] = worst
		}
	}
	plain, over := median(times[0]), median(times[1])
	b.ReportMetric(plain, "plain_step_s")
	b.ReportMetric(over, "overlap_step_s")
	b.ReportMetric(plain/over, "speedup")
	b.Logf("ddp overlap n=%d link=%s params=%d grads=%.0fMB batch=%s: plain step_s=%.3f (compute %.3f, step() %.3f), overlap step_s=%.3f (step() %.3f, %d of %d parts during backward), speedup=%.3f",
		n, fmt.Sprintf("%dMbit/s", rate/1e6), last[0].Params, float64(last[0].Params)*4/1e6, batch, plain, last[0].ComputeS, last[0].StepCallS,
		over, last[1].StepCallS, last[1].Early, last[1].Parts, plain/over)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
