package meshtrain

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// keepFiles is how many state files the loop leaves in CheckpointDir.
const keepFiles = 2

// save writes the trainer's state to a file and hands it to the node. A
// failed save is logged and training goes on: the mesh only loses a
// checkpoint.
func (l *loop) save(ctx context.Context) bool {
	step := l.tr.Step()
	path, err := l.writeState(step)
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		err = l.c.SaveCheckpoint(sctx, path, step)
		cancel()
	}
	if err != nil {
		l.log.Warn("checkpoint not saved", "step", step, "err", err)
		return false
	}
	l.res.Saves++
	l.saved = append(l.saved, path)
	for len(l.saved) > keepFiles {
		os.Remove(l.saved[0])
		l.saved = l.saved[1:]
	}
	return true
}

// writeState writes the state atomically to CheckpointDir/state-STEP.rmts.
func (l *loop) writeState(step uint64) (string, error) {
	if err := os.MkdirAll(l.cfg.CheckpointDir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(l.cfg.CheckpointDir, fmt.Sprintf("state-%012d.rmts", step))
	tmp, err := os.CreateTemp(l.cfg.CheckpointDir, ".state-*")
	if err != nil {
		return "", err
	}
	_, err = tmp.Write(l.tr.MarshalState())
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("write state: %w", err)
	}
	return path, nil
}
