package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/checkpoint"
	"github.com/ringmesh/ringmesh/node/apiserver"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// joinCheckpointName is where a join exports the entry step's checkpoint
// when the trainer names no destination.
const joinCheckpointName = "join-checkpoint.ckpt"

// ckptError maps the checkpoint package's errors onto API codes.
func ckptError(err error) localapi.Response {
	switch {
	case errors.Is(err, checkpoint.ErrUnknownRoot):
		return apiErr(localapi.CodeNotFound, "%v", err)
	case errors.Is(err, checkpoint.ErrNoProvider):
		return apiErr(localapi.CodeUnavailable, "%v", err)
	case errors.Is(err, checkpoint.ErrHashMismatch):
		return apiErr(localapi.CodeHashMismatch, "%v", err)
	case errors.Is(err, checkpoint.ErrDiskFull), errors.Is(err, syscall.ENOSPC):
		return apiErr(localapi.CodeDiskFull, "%v", err)
	case errors.Is(err, context.Canceled):
		return apiErr(localapi.CodeShuttingDown, "node shutting down")
	case errors.Is(err, context.DeadlineExceeded):
		return apiErr(localapi.CodeTimeout, "%v", err)
	}
	return apiErr(localapi.CodeInternal, "%v", err)
}

func absPath(what, p string) (string, *localapi.Response) {
	if p == "" || !filepath.IsAbs(p) {
		r := apiErr(localapi.CodeBadRequest, "%s %q must be an absolute path", what, p)
		return "", &r
	}
	return filepath.Clean(p), nil
}

// save stores the trainer's file at path as the checkpoint of step and
// announces it.
func (c *checkpoints) save(ctx context.Context, path string, step uint64) localapi.Response {
	path, bad := absPath("path", path)
	if bad != nil {
		return *bad
	}
	m, root, err := c.store.PutWithOptions(ctx, path, step, checkpoint.PutOptions{RunID: c.history().run})
	if err != nil {
		return ckptError(fmt.Errorf("save %s: %w", path, err))
	}
	if err := c.catalog.Announce(ctx, root); err != nil {
		// Stored: the periodic re-announcement publishes it later.
		c.log.Warn("announce checkpoint", "root", root, "step", step, "err", err)
	}
	c.log.Info("checkpoint saved", "root", root, "step", step, "size", m.Size)
	return localapi.Response{Step: step, Checkpoint: &localapi.CheckpointInfo{
		Step: step, Root: root.String(), Size: m.Size, Local: true}}
}

// list reports the checkpoints known in the mesh and the fetches running.
func (c *checkpoints) list(all bool) localapi.Response {
	var resp localapi.Response
	known := c.catalog.List()
	if !all {
		known = c.counted(c.history())
	}
	for _, k := range known {
		resp.Checkpoints = append(resp.Checkpoints, knownInfo(k))
	}
	c.mu.Lock()
	for _, p := range c.inflight {
		resp.Fetches = append(resp.Fetches, *p)
	}
	c.mu.Unlock()
	return resp
}

func knownInfo(k checkpoint.Known) localapi.CheckpointInfo {
	info := localapi.CheckpointInfo{Step: k.Step, Root: k.Root.String(), Size: k.Size, Local: k.Local, RunID: k.RunID}
	for _, p := range k.Providers {
		info.Providers = append(info.Providers, p.String())
	}
	return info
}

// fetch resolves f.Root or the latest checkpoint, fetches it from every
// provider unless it is local, and exports it to f.Dest.
func (c *checkpoints) fetch(ctx context.Context, f apiserver.Fetch) localapi.Response {
	dest, bad := absPath("dest", f.Dest)
	if bad != nil {
		return *bad
	}
	var k checkpoint.Known
	switch {
	case f.Latest && f.Root != "":
		return apiErr(localapi.CodeBadRequest, "give root or latest, not both")
	case f.Latest:
		h := c.history()
		ts := c.trusted(h)
		if len(ts) == 0 {
			return apiErr(localapi.CodeNotFound, "no checkpoint of run %s is held here or announced by a member of the agreed list", h.run)
		}
		k = ts[0]
	default:
		root, err := checkpoint.ParseRoot(f.Root)
		if err != nil {
			return apiErr(localapi.CodeBadRequest, "root: %v", err)
		}
		if k = c.lookup(root); k.Root.IsZero() {
			return apiErr(localapi.CodeNotFound, "checkpoint %s is unknown: neither held here nor announced in the mesh", root)
		}
	}
	return c.fetchKnown(ctx, k, dest, f.FetchID)
}

// lookup returns what the catalog knows of root (zero Root if nothing).
func (c *checkpoints) lookup(root checkpoint.Root) checkpoint.Known {
	for _, k := range c.catalog.List() {
		if k.Root == root {
			return k
		}
	}
	if info, ok := c.store.Stat(root); ok && info.Complete {
		return checkpoint.Known{Step: info.Step, Root: root, Size: info.Size, Local: true}
	}
	return checkpoint.Known{}
}

// fetchKnown makes k local (fetching it from its live providers unless it
// is already) and exports it to dest.
func (c *checkpoints) fetchKnown(ctx context.Context, k checkpoint.Known, dest, fetchID string) localapi.Response {
	stats := &localapi.FetchStats{Local: true, Providers: []string{}}
	if info, ok := c.store.Stat(k.Root); !ok || !info.Complete {
		providers := c.catalog.Providers(k.Root)
		if len(providers) == 0 {
			return apiErr(localapi.CodeUnavailable, "no live provider of checkpoint %s (step %d) is known", k.Root, k.Step)
		}
		var err error
		if stats, err = c.fetchFrom(ctx, k, providers, fetchID); err != nil {
			return ckptError(fmt.Errorf("fetch %s: %w", k.Root, err))
		}
	}
	start := time.Now()
	if err := c.store.Export(ctx, k.Root, dest); err != nil {
		return ckptError(fmt.Errorf("export %s to %s: %w", k.Root, dest, err))
	}
	stats.ExportMS = time.Since(start).Milliseconds()
	return localapi.Response{Step: k.Step, Fetch: stats, Checkpoint: &localapi.CheckpointInfo{
		Step: k.Step, Root: k.Root.String(), Size: k.Size, Local: true, Path: dest}}
}

// fetchFrom runs one fetch, publishing its progress for checkpoint_list,
// reports bad providers and announces the checkpoint once held.
func (c *checkpoints) fetchFrom(ctx context.Context, k checkpoint.Known, providers []peer.ID, fetchID string) (*localapi.FetchStats, error) {
	start := time.Now()
	prog := &localapi.FetchProgress{FetchID: fetchID, Step: k.Step, Root: k.Root.String(), Size: k.Size, Providers: len(providers)}
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	c.inflight[id] = prog
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.inflight, id)
		c.mu.Unlock()
	}()
	res, err := c.fetcher.Fetch(ctx, k.Root, providers, func(p checkpoint.Progress) {
		c.mu.Lock()
		prog.Done, prog.Fetched, prog.Providers = p.Done, p.Fetched, p.Providers
		prog.ElapsedMS = time.Since(start).Milliseconds()
		c.mu.Unlock()
	})
	for _, p := range res.BadPeers {
		c.log.Warn("checkpoint provider served corrupt data", "peer", p, "root", k.Root)
		c.catalog.ReportBad(k.Root, p)
	}
	if err != nil {
		return nil, err
	}
	stats := &localapi.FetchStats{Chunks: len(res.Manifest.Chunks), ChunksFetched: res.ChunksFetched,
		ChunksResumed: res.ChunksResumed, Fetched: res.Fetched, Providers: []string{},
		FetchMS: time.Since(start).Milliseconds()}
	for p, n := range res.PerPeer {
		if n > 0 {
			stats.Providers = append(stats.Providers, p.String())
		}
	}
	for _, p := range res.BadPeers {
		stats.BadPeers = append(stats.BadPeers, p.String())
	}
	c.log.Info("checkpoint fetched", "root", k.Root, "step", k.Step, "bytes", res.Fetched,
		"chunks_fetched", res.ChunksFetched, "chunks_resumed", res.ChunksResumed, "ms", stats.FetchMS)
	if err := c.catalog.Announce(ctx, k.Root); err != nil {
		c.log.Warn("announce checkpoint", "root", k.Root, "err", err)
	}
	return stats, nil
}

// joinState hands a joining trainer the state at its entry step. A node
// that formed a new mesh at the trainer's own start step needs none (unless
// one exists). Otherwise it waits up to JoinTimeout for the checkpoint of
// the entry step, which the member told SaveCheckpoint saves, then fetches
// it.
//
// Only a checkpoint of the run of the joiner's epoch, held here or
// announced by a member of the list its admission named, counts.
func (c *checkpoints) joinState(ctx context.Context, entry, start uint64, hist history, dest string) localapi.Response {
	if dest == "" {
		dest = filepath.Join(c.dataDir, joinCheckpointName)
	}
	dest, bad := absPath("dest", dest)
	if bad != nil {
		return *bad
	}
	k, ok := c.atStep(entry, hist)
	if b := c.base.Load(); !ok && b != nil && b.step == entry {
		// The first step of a mesh this node re-formed: its state is the
		// newest checkpoint the operator's reform found.
		k, ok = b.known, true
	}
	if !ok && entry == start {
		return localapi.Response{}
	}
	if !ok {
		wctx, cancel := context.WithTimeout(ctx, c.cfg.JoinTimeout)
		defer cancel()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for !ok {
			select {
			case <-wctx.Done():
				if ctx.Err() != nil {
					return ckptError(ctx.Err())
				}
				return apiErr(localapi.CodeUnavailable, "no checkpoint of entry step %d was announced within %s; join again", entry, c.cfg.JoinTimeout)
			case <-tick.C:
			}
			k, ok = c.atStep(entry, hist)
		}
	}
	return c.fetchKnown(ctx, k, dest, "")
}

// atStep returns a checkpoint of step that the history lets count.
func (c *checkpoints) atStep(step uint64, h history) (checkpoint.Known, bool) {
	for _, k := range c.trusted(h) {
		if k.Step == step {
			return k, true
		}
	}
	return checkpoint.Known{}, false
}
