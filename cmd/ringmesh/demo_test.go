package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/demo"
	"github.com/ringmesh/ringmesh/internal/systest"
)

// TestDemo runs `ringmesh demo` as a subprocess with a kill and a restart,
// and checks its exit status, summary.json and loss.png.
func TestDemo(t *testing.T) {
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, systest.Binary(t), "demo", "--steps", "120", "--kill-at", "40", "--restart-at", "70",
		"--batch", "256", "--out", out)
	// SIGTERM on timeout lets the demo stop its nodes.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("demo stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			logs, _ := filepath.Glob(filepath.Join(out, "nodes", "*", "node-*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				if len(b) > 4000 {
					b = b[len(b)-4000:]
				}
				t.Logf("=== %s\n%s", l, b)
			}
		}
	})
	if err != nil {
		t.Fatalf("ringmesh demo: %v", err)
	}
	if !strings.Contains(stdout.String(), "result        OK") {
		t.Errorf("stdout has no OK result line")
	}

	b, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sum demo.Summary
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatalf("summary.json: %v\n%s", err, b)
	}
	if !sum.OK || len(sum.Problems) > 0 {
		t.Errorf("summary ok=%v, problems %q", sum.OK, sum.Problems)
	}
	if sum.Nodes != 4 || sum.Steps != 120 || sum.StepsApplied != 120 {
		t.Errorf("summary: %d nodes, %d of %d steps; want 4 nodes, 120 of 120", sum.Nodes, sum.StepsApplied, sum.Steps)
	}
	if len(sum.Hashes) != 4 || !sum.HashesEqual {
		t.Errorf("hashes %v (equal %v), want 4 equal", sum.Hashes, sum.HashesEqual)
	}
	for name, h := range sum.Hashes {
		if h != sum.Hashes["node0"] || len(h) != 64 {
			t.Errorf("%s hash %q, node0 %q", name, h, sum.Hashes["node0"])
		}
	}
	if !sum.LossFell || !(sum.FinalLoss < sum.FirstLoss) || !(sum.FinalEvalLoss < sum.InitialEvalLoss) {
		t.Errorf("loss %v -> %v, held-out %v -> %v: want both to fall", sum.FirstLoss, sum.FinalLoss, sum.InitialEvalLoss, sum.FinalEvalLoss)
	}
	k, r := sum.Kill, sum.Restart
	if k == nil || k.Node != "node3" || k.Step < 40 || k.RecoveryMS <= 0 || k.RecoveredAtStep < k.Step {
		t.Errorf("kill %+v: want node3 killed at step >= 40 and a recovery", k)
	}
	if r == nil || !r.Rejoined || r.Node != "node3" || r.Step < 70 || r.RejoinStep < r.Step || !r.Synced || r.Checkpoint != int64(r.RejoinStep) {
		t.Errorf("restart %+v: want node3 restarted at step >= 70, rejoined synced from the checkpoint of its entry step", r)
	}

	f, err := os.Open(filepath.Join(out, "loss.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("loss.png: %v", err)
	}
	if bd := img.Bounds(); bd.Dx() != demo.PlotWidth || bd.Dy() != demo.PlotHeight {
		t.Errorf("loss.png is %v, want %dx%d", bd, demo.PlotWidth, demo.PlotHeight)
	}
	// Every node process the demo started has exited.
	pids, _ := filepath.Glob(filepath.Join(out, "nodes", "*", "ringmesh.sock"))
	for _, sock := range pids {
		if _, err := systest.Status(filepath.Dir(sock)); err == nil {
			t.Errorf("node of %s still answers after the demo exited", filepath.Dir(sock))
		}
	}
}
