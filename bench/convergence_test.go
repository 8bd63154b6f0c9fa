package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestDiLoCoConvergenceScript runs bench/diloco_convergence.py at a toy
// size (2 hosts, 10 steps, one every-step and one DiLoCo run): its node
// launcher, trainers and output work. Skipped with -short, without
// $RINGMESH_BIN (make test sets it) or without a python3 that has torch
// and numpy ($PYTHON, default /usr/bin/python3).
func TestDiLoCoConvergenceScript(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nodes and torch trainers")
	}
	bin := os.Getenv("RINGMESH_BIN")
	if bin == "" {
		t.Skip("RINGMESH_BIN unset (make test sets it)")
	}
	py := os.Getenv("PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	if err := exec.Command(py, "-c", "import torch, numpy").Run(); err != nil {
		t.Skipf("%s has no torch or numpy: %v", py, err)
	}
	out := t.TempDir()
	cmd := exec.Command(py, "diloco_convergence.py", "--hosts", "2", "--steps", "10", "--runs", "every,5:int8",
		"--d-model", "32", "--layers", "1", "--batch", "2", "--ctx", "16", "--warmup", "2",
		"--eval-every", "5", "--val-seqs", "8", "--corpus-mb", "0.2", "--json", "--out", out)
	cmd.Env = append(os.Environ(), "RINGMESH_BIN="+bin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("diloco_convergence.py: %v\n%s", err, stderr.String())
	}
	type run struct {
		Run          string  `json:"run"`
		ValLoss      float64 `json:"val_loss"`
		Rounds       int     `json:"rounds"`
		BytesPerStep float64 `json:"bytes_per_step"`
		NotApplied   int     `json:"not_applied"`
	}
	var runs []run
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		var r run
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		runs = append(runs, r)
	}
	if len(runs) != 2 || runs[0].Run != "every" || runs[1].Run != "H5-int8" {
		t.Fatalf("runs %+v; want every and H5-int8", runs)
	}
	for i, wantRounds := range []int{10, 2} {
		r := runs[i]
		if r.Rounds != wantRounds || r.NotApplied != 0 || math.IsNaN(r.ValLoss) || r.ValLoss <= 0 || r.ValLoss > 6 {
			t.Errorf("%s: %+v; want %d rounds, all applied, a held-out loss in (0, 6]", r.Run, r, wantRounds)
		}
	}
	if every, dl := runs[0].BytesPerStep, runs[1].BytesPerStep; every <= 0 || dl <= 0 || dl > every/5 {
		t.Errorf("bytes per step: every-step %v, H=5 int8 %v; want the second at most a fifth of the first", every, dl)
	}
	for _, f := range []string{"summary.csv", "curve-every.csv", "curve-H5-int8.csv"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
}
