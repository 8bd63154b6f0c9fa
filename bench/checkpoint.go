package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/ringmesh/ringmesh/internal/nodeproc"
	"github.com/ringmesh/ringmesh/internal/units"
	"github.com/ringmesh/ringmesh/node/client"
)

// CheckpointResult is one checkpoint benchmark measurement.
type CheckpointResult struct {
	Providers   int     `json:"providers"`
	Size        int64   `json:"size"`
	SaveS       float64 `json:"save_s"`
	ReplicateS  float64 `json:"replicate_s"`
	FetchS      float64 `json:"fetch_s"`
	GBps        float64 `json:"GBps"`
	ExportS     float64 `json:"export_s"`
	ServedBy    int     `json:"served_by"` // providers that served chunks
	ChunksTotal int     `json:"chunks"`
}

// String is the result line `ringmesh bench checkpoint` prints.
func (r CheckpointResult) String() string {
	return fmt.Sprintf("checkpoint providers=%d size=%s fetch_s=%.3f GBps=%.3f", r.Providers, units.Format(r.Size), r.FetchS, r.GBps)
}

// Checkpoint saves a size-byte checkpoint on n-1 local nodes and fetches
// it on a fresh n-th from all of them, timing each part.
func Checkpoint(ctx context.Context, n int, size int64, stderr io.Writer) (CheckpointResult, error) {
	r := CheckpointResult{Providers: n - 1, Size: size}
	args := []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht", "--log-level", "info",
		"--replicas", fmt.Sprint(n - 1), "--replication-rate", "0"}
	cl, err := startLocal(n-1, args, "", stderr)
	if err != nil {
		return r, err
	}
	defer cl.stop()
	src := filepath.Join(cl.root, "checkpoint.bin")
	if err := writeRandom(src, size); err != nil {
		return r, err
	}
	saver, err := client.Dial(ctx, cl.dir(0))
	if err != nil {
		return r, err
	}
	defer saver.Close()
	start := time.Now()
	resp, err := saver.CheckpointSave(ctx, src, 1)
	if err != nil {
		return r, fmt.Errorf("save: %w", err)
	}
	r.SaveS = time.Since(start).Seconds()
	os.Remove(src)
	root := resp.Checkpoint.Root
	fmt.Fprintf(stderr, "saved %s in %.2fs; waiting for %d replicas\n", root, r.SaveS, n-2)
	start = time.Now()
	if err := waitProviders(ctx, cl.dir(0), root, n-2); err != nil {
		return r, fmt.Errorf("replication: %w", err)
	}
	r.ReplicateS = time.Since(start).Seconds()

	freshDir := filepath.Join(cl.root, "fresh")
	p, err := nodeproc.StartCmd(nil, cl.bin, freshDir, append(append([]string{}, args...), "--join", cl.procs[0].Addr)...)
	if err != nil {
		return r, fmt.Errorf("start the fetching node: %w", err)
	}
	cl.procs = append(cl.procs, p)
	if err := waitProviders(ctx, freshDir, root, n-1); err != nil {
		return r, fmt.Errorf("fresh node learning the providers: %w", err)
	}
	fetcher, err := client.Dial(ctx, freshDir)
	if err != nil {
		return r, err
	}
	defer fetcher.Close()
	dest := filepath.Join(cl.root, "fetched.bin")
	resp, err = fetcher.CheckpointFetch(ctx, client.Fetch{Root: root, Dest: dest})
	if err != nil {
		return r, fmt.Errorf("fetch: %w", err)
	}
	st := resp.Fetch
	r.FetchS = float64(st.FetchMS) / 1000
	r.ExportS = float64(st.ExportMS) / 1000
	r.GBps = float64(size) / max(r.FetchS, 1e-3) / 1e9
	r.ServedBy, r.ChunksTotal = len(st.Providers), st.Chunks
	return r, nil
}

// waitProviders polls the node of dir until it lists at least want remote
// providers of root.
func waitProviders(ctx context.Context, dir, root string, want int) error {
	c, err := client.Dial(ctx, dir)
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		resp, err := c.CheckpointList(ctx, false)
		if err != nil {
			return err
		}
		for _, ck := range resp.Checkpoints {
			if ck.Root == root && len(ck.Providers) >= want {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: fewer than %d providers of %s: %w", dir, want, root, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// writeRandom writes size pseudo-random bytes (incompressible, fast) to path.
func writeRandom(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 4<<20)
	var seed [32]byte
	s := rand.Uint64()
	for i := range seed {
		seed[i] = byte(s >> (8 * (i % 8)))
	}
	if _, err := io.CopyN(w, rand.NewChaCha8(seed), size); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
