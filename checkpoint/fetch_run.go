package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// fetchRun is the shared state of one Fetch: a work-stealing queue of
// missing chunks that every provider's workers take from, so faster
// providers take more.
type fetchRun struct {
	f        *Fetcher
	root     Root
	m        Manifest
	limiter  *rate.Limiter
	progress func(Progress)
	progMu   sync.Mutex // serialises progress calls

	mu        sync.Mutex
	wake      chan struct{} // closed and replaced on every change
	pending   []int
	inflight  int
	have      int
	haveBytes int64
	fetched   int64
	nfetched  int
	perPeer   map[peer.ID]int
	failures  map[peer.ID]int
	dead      map[peer.ID]bool
	bad       []peer.ID
	unknown   int
	fatal     error
	lastErr   error
	nprov     int
}

func newFetchRun(f *Fetcher, root Root, m Manifest, have []bool, progress func(Progress)) *fetchRun {
	r := &fetchRun{f: f, root: root, m: m, progress: progress, limiter: f.newLimiter(m.ChunkSize),
		wake: make(chan struct{}), perPeer: make(map[peer.ID]int),
		failures: make(map[peer.ID]int), dead: make(map[peer.ID]bool)}
	for i, ok := range have {
		if ok {
			r.have++
			r.haveBytes += int64(m.ChunkLen(i))
		} else {
			r.pending = append(r.pending, i)
		}
	}
	return r
}

// start runs the workers of every usable provider and returns when all
// have exited.
func (r *fetchRun) start(ctx context.Context, providers []peer.ID) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.Lock()
	live := slices.DeleteFunc(slices.Clone(providers), func(p peer.ID) bool { return r.dead[p] })
	r.nprov = len(live)
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range live {
		for range r.f.cfg.StreamsPerProvider {
			wg.Go(func() { r.worker(ctx, cancel, p) })
		}
	}
	wg.Wait()
}

func (r *fetchRun) worker(ctx context.Context, cancel context.CancelFunc, p peer.ID) {
	c := &conn{f: r.f, p: p}
	defer c.close()
	for {
		if !r.slot(ctx, c) {
			return
		}
		i, ok := r.take(ctx, p)
		if !ok {
			return
		}
		n := r.m.ChunkLen(i)
		if r.limiter != nil {
			if err := r.limiter.WaitN(ctx, n); err != nil {
				r.requeue(i)
				return
			}
		}
		data, err := c.chunk(ctx, r.root, i, n)
		if err == nil {
			err = r.f.store.writeChunk(r.root, i, data)
		}
		if err == nil {
			r.done(p, i, n)
			continue
		}
		if ctx.Err() != nil {
			r.requeue(i)
			return
		}
		if !r.fail(p, i, err) {
			cancel()
			return
		}
		c.reset()
	}
}

// slot makes sure c holds one of the Fetcher's stream slots for its peer
// before the worker takes a chunk (so a chunk is never stuck with a worker
// waiting for a slot), waiting while this fetch may still need the peer.
// It returns false when the worker should stop.
func (r *fetchRun) slot(ctx context.Context, c *conn) bool {
	for !c.slot {
		r.mu.Lock()
		stop := r.fatal != nil || r.dead[c.p] || len(r.pending) == 0 && r.inflight == 0
		wake := r.wake
		r.mu.Unlock()
		if stop {
			return false
		}
		ok, freed := r.f.slots.tryAcquire(c.p)
		if ok {
			c.slot = true
			break
		}
		select {
		case <-freed:
		case <-wake:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// take returns the next missing chunk for p; false when p must stop
// (all chunks held, p abandoned, a fatal error, ctx done).
func (r *fetchRun) take(ctx context.Context, p peer.ID) (int, bool) {
	for {
		r.mu.Lock()
		if r.fatal != nil || r.dead[p] {
			r.mu.Unlock()
			return 0, false
		}
		if len(r.pending) > 0 {
			i := r.pending[0]
			r.pending = r.pending[1:]
			r.inflight++
			r.mu.Unlock()
			return i, true
		}
		if r.inflight == 0 {
			r.mu.Unlock()
			return 0, false
		}
		w := r.wake
		r.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return 0, false
		}
	}
}

// broadcastLocked wakes every waiting worker.
func (r *fetchRun) broadcastLocked() {
	close(r.wake)
	r.wake = make(chan struct{})
}

func (r *fetchRun) requeue(i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requeueLocked(i)
}

func (r *fetchRun) requeueLocked(i int) {
	r.inflight--
	r.pending = append([]int{i}, r.pending...)
	r.broadcastLocked()
}

func (r *fetchRun) done(p peer.ID, i, n int) {
	r.mu.Lock()
	r.inflight--
	r.have++
	r.haveBytes += int64(n)
	r.fetched += int64(n)
	r.nfetched++
	r.perPeer[p]++
	r.broadcastLocked()
	pr := r.snapshotLocked()
	r.mu.Unlock()
	r.f.metrics.ChunkFetched(p, n)
	if r.progress != nil {
		r.progMu.Lock()
		r.progress(pr)
		r.progMu.Unlock()
	}
}

func (r *fetchRun) snapshotLocked() Progress {
	return Progress{Root: r.root, Step: r.m.Step, Size: r.m.Size, Done: r.haveBytes, Fetched: r.fetched,
		Chunks: len(r.m.Chunks), ChunksDone: r.have, Providers: r.nprov - len(r.dead), BadPeers: slices.Clone(r.bad)}
}

// fail handles a failed chunk i from p: the chunk goes back to the queue
// and p is abandoned if it sent bad data, refused, or failed too often.
// It returns false on a fatal (local) error that ends the whole fetch.
func (r *fetchRun) fail(p peer.ID, i int, err error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requeueLocked(i)
	var remote *RemoteError
	switch {
	case errors.Is(err, ErrDiskFull) || errors.Is(err, ErrUnknownRoot) && !errors.As(err, &remote):
		r.fatal = err // local: disk full, or the entry vanished
		return false
	case errors.Is(err, ErrHashMismatch) || errors.Is(err, ErrBadFrame) && !errors.As(err, &remote):
		r.f.log.Warn("bad chunk from provider", "peer", p, "root", r.root, "chunk", i, "err", err)
		r.f.metrics.BadChunk(p)
		if !r.dead[p] {
			r.bad = append(r.bad, p)
		}
		r.dead[p] = true
	case errors.As(err, &remote):
		if errors.Is(err, ErrUnknownRoot) && !r.dead[p] {
			r.unknown++
		}
		r.dead[p] = true
	default:
		r.failures[p]++
		if r.failures[p] >= r.f.cfg.MaxProviderFailures {
			r.dead[p] = true
		}
	}
	r.lastErr = &PeerError{Peer: p, Err: err}
	return true
}

// collect copies the counters into res.
func (r *fetchRun) collect(res *Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res.Fetched, res.ChunksFetched = r.fetched, r.nfetched
	for p, n := range r.perPeer {
		res.PerPeer[p] = n
	}
	for _, p := range r.bad {
		if !slices.Contains(res.BadPeers, p) {
			res.BadPeers = append(res.BadPeers, p)
		}
	}
}

// err explains why chunks are still missing, or returns nil.
func (r *fetchRun) err(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	missing := len(r.m.Chunks) - r.have
	switch {
	case missing == 0:
		return nil
	case r.fatal != nil:
		return r.fatal
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case len(r.bad) > 0:
		return fmt.Errorf("%d chunks missing after all providers tried: %w (last: %w)", missing, ErrHashMismatch, r.lastErr)
	case r.nprov > 0 && r.unknown == r.nprov:
		return ErrUnknownRoot
	case r.lastErr != nil:
		return fmt.Errorf("%d chunks missing: %w (last: %w)", missing, ErrNoProvider, r.lastErr)
	}
	return fmt.Errorf("%d chunks missing: %w", missing, ErrNoProvider)
}
