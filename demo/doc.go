// Package demo is `ringmesh demo`: it starts local `ringmesh node`
// processes (internal/nodeproc) and a Go trainer for each (train,
// train/meshtrain), trains a small model with ring all-reduce, SIGKILLs one
// node and restarts it (it fetches the newest checkpoint and rejoins),
// draws the progress, and checks the outcome: the live nodes' final
// parameters are bit-identical and the loss fell. cmd/ringmesh only turns
// flags into a Config.
package demo

import (
	"encoding/json"
	"os"
	"path/filepath"
)

// WriteOutputs writes summary.json and loss.png into the out dir.
func (d *Demo) WriteOutputs(sum Summary) error {
	b, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d.cfg.Out, "summary.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(d.cfg.Out, "loss.png"))
	if err != nil {
		return err
	}
	d.mu.Lock()
	err = plotLoss(f, d.plotData(sum))
	d.mu.Unlock()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
