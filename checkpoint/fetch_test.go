package checkpoint

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// tnode is one in-process node: host, store, server, fetcher.
type tnode struct {
	h       host.Host
	store   *Store
	metrics *countMetrics
	fetcher *Fetcher
	stop    context.CancelFunc // stops the server
}

func newNode(t testing.TB) *tnode {
	t.Helper()
	return newNodeIn(t, t.TempDir(), newHost(t))
}

func newNodeIn(t testing.TB, dir string, h host.Host) *tnode {
	t.Helper()
	n := &tnode{h: h, store: openStore(t, dir, LocalStoreConfig()), metrics: newCountMetrics()}
	srv, err := NewServer(LocalServerConfig(), n.h, n.store, nil, n.metrics)
	if err != nil {
		t.Fatal(err)
	}
	n.stop = runBG(t, srv.Run)
	n.fetcher, err = NewFetcher(LocalFetcherConfig(), n.h, n.store, nil, n.metrics)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func ids(ns ...*tnode) []peer.ID {
	var out []peer.ID
	for _, n := range ns {
		out = append(out, n.h.ID())
	}
	return out
}

func hosts(ns ...*tnode) []host.Host {
	var out []host.Host
	for _, n := range ns {
		out = append(out, n.h)
	}
	return out
}

// saveOn puts the same file on each node (content addressing makes them
// providers of the same root).
func saveOn(t testing.TB, path string, step uint64, ns ...*tnode) Root {
	t.Helper()
	var root Root
	for _, n := range ns {
		_, r, err := n.store.Put(context.Background(), path, step)
		if err != nil {
			t.Fatal(err)
		}
		root = r
	}
	return root
}

func served(ns ...*tnode) int64 {
	var s int64
	for _, n := range ns {
		s += n.metrics.served.Load()
	}
	return s
}

func TestFetchFromThreeHosts(t *testing.T) {
	ctx := testCtx(t)
	a, b, c, d := newNode(t), newNode(t), newNode(t), newNode(t)
	link(hosts(a, b, c, d)...)
	src, sum := writeRandom(t, 40*64<<10+123, 7)
	_, root, err := a.store.Put(ctx, src, 100)
	if err != nil {
		t.Fatal(err)
	}
	// b fetches from the writer a alone, then d from a, b and c, where c
	// does not hold it (unknown root): d gets it from a and b.
	if _, err := b.fetcher.Fetch(ctx, root, ids(a), nil); err != nil {
		t.Fatalf("b fetch: %v", err)
	}
	var last Progress
	res, err := d.fetcher.Fetch(ctx, root, ids(c, a, b), func(p Progress) { last = p })
	if err != nil {
		t.Fatalf("d fetch: %v", err)
	}
	dst := filepath.Join(t.TempDir(), "got.bin")
	if err := d.store.Export(ctx, root, dst); err != nil {
		t.Fatal(err)
	}
	if got := fileHash(t, dst); got != sum {
		t.Fatalf("fetched file sha256 %x, want %x", got, sum)
	}
	if res.ChunksFetched != 41 || res.Fetched != 40*64<<10+123 || len(res.BadPeers) != 0 {
		t.Fatalf("result: %d chunks, %d bytes, bad %v; want 41 chunks, all bytes, no bad peers", res.ChunksFetched, res.Fetched, res.BadPeers)
	}
	if last.ChunksDone != 41 || last.Done != res.Fetched || last.Chunks != 41 {
		t.Fatalf("last progress %+v, want all 41 chunks done", last)
	}
	if res.PerPeer[c.h.ID()] != 0 || res.PerPeer[a.h.ID()]+res.PerPeer[b.h.ID()] != 41 {
		t.Fatalf("per peer %v, want 41 chunks from a and b, none from c", res.PerPeer)
	}
	// Fetching what is held is a no-op.
	before := served(a, b, c)
	if _, err := d.fetcher.Fetch(ctx, root, ids(a), nil); err != nil || served(a, b, c) != before {
		t.Fatalf("refetch of a held root: %v, served %d more chunks", err, served(a, b, c)-before)
	}
}

func TestFetchErrors(t *testing.T) {
	ctx := testCtx(t)
	a, b := newNode(t), newNode(t)
	link(a.h, b.h)
	if _, err := b.fetcher.Fetch(ctx, Root{1}, ids(a), nil); !errors.Is(err, ErrUnknownRoot) {
		t.Fatalf("unknown root: %v, want ErrUnknownRoot", err)
	}
	if _, err := b.fetcher.Fetch(ctx, Root{1}, nil, nil); !errors.Is(err, ErrNoProvider) {
		t.Fatalf("no providers: %v, want ErrNoProvider", err)
	}
	gone := newHost(t)
	link(b.h, gone)
	goneID := gone.ID()
	gone.Close()
	if _, err := b.fetcher.Fetch(ctx, Root{1}, []peer.ID{goneID}, nil); !errors.Is(err, ErrNoProvider) {
		t.Fatalf("unreachable provider: %v, want ErrNoProvider", err)
	}
	// Disk full on the fetching side is surfaced as ErrDiskFull.
	src, _ := writeRandom(t, 3*64<<10, 3)
	root := saveOn(t, src, 1, a)
	b.store.writeAt = func(*osFile, []byte, int64) (int, error) { return 0, errNoSpace }
	if _, err := b.fetcher.Fetch(ctx, root, ids(a), nil); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("full disk: %v, want ErrDiskFull", err)
	}
}

func TestFetchResumesWithoutRefetching(t *testing.T) {
	ctx := testCtx(t)
	a, b, c := newNode(t), newNode(t), newNode(t)
	dir := t.TempDir()
	d := newNodeIn(t, dir, newHost(t))
	link(hosts(a, b, c, d)...)
	const chunks = 60
	src, sum := writeRandom(t, chunks*64<<10, 11)
	root := saveOn(t, src, 5, a, b, c)

	// Interrupt the fetch once 20 chunks are verified (the node is killed
	// mid-transfer).
	fctx, cancel := context.WithCancel(ctx)
	_, err := d.fetcher.Fetch(fctx, root, ids(a, b, c), func(p Progress) {
		if p.ChunksDone >= 20 {
			cancel()
		}
	})
	cancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted fetch: %v, want context.Canceled", err)
	}
	d.stop()
	d.store.Close()

	// Restart: reopen the store, which finds the verified chunks again.
	d = newNodeIn(t, dir, d.h)
	in, ok := d.store.Stat(root)
	if !ok || in.Complete || in.HaveChunks < 20 || in.HaveChunks == chunks {
		t.Fatalf("after restart: %+v (held %v), want a partial with at least 20 chunks", in, ok)
	}
	before := served(a, b, c)
	res, err := d.fetcher.Fetch(ctx, root, ids(a, b, c), nil)
	if err != nil {
		t.Fatalf("resumed fetch: %v", err)
	}
	if res.ChunksResumed != in.HaveChunks || res.ChunksFetched != chunks-in.HaveChunks {
		t.Fatalf("resumed %d fetched %d, want %d and %d", res.ChunksResumed, res.ChunksFetched, in.HaveChunks, chunks-in.HaveChunks)
	}
	if got := served(a, b, c) - before; got != int64(chunks-in.HaveChunks) {
		t.Fatalf("providers served %d chunks on resume, want %d (verified chunks not refetched)", got, chunks-in.HaveChunks)
	}
	dst := filepath.Join(t.TempDir(), "got.bin")
	if err := d.store.Export(ctx, root, dst); err != nil {
		t.Fatal(err)
	}
	if fileHash(t, dst) != sum {
		t.Fatal("resumed fetch is not byte-identical")
	}
}

func TestFetchCorruptProvider(t *testing.T) {
	ctx := testCtx(t)
	good1, bad, good2, d := newNode(t), newNode(t), newNode(t), newNode(t)
	link(hosts(good1, bad, good2, d)...)
	const chunks = 30
	src, sum := writeRandom(t, chunks*64<<10, 13)
	root := saveOn(t, src, 9, good1, bad, good2)
	// Bit rot on bad's disk after it opened its store: every chunk it
	// serves is wrong.
	for i := range chunks {
		corruptByte(t, filepath.Join(bad.store.Dir(), root.String(), dataFile), int64(i)*64<<10+int64(i))
	}
	// The good providers hold their replies until bad has been caught (or
	// the test deadline), so bad surely serves a chunk.
	caught := make(chan struct{})
	var once sync.Once
	hold := func() {
		select {
		case <-caught:
		case <-time.After(testTimeout / 2):
		}
	}
	good1.metrics.hold, good2.metrics.hold = hold, hold
	d.metrics.hold = nil
	progress := func(p Progress) {
		if len(p.BadPeers) > 0 {
			once.Do(func() { close(caught) })
		}
	}
	go func() {
		// Release the good providers as soon as d counts a bad chunk.
		for ctx.Err() == nil {
			d.metrics.mu.Lock()
			n := d.metrics.bad[bad.h.ID()]
			d.metrics.mu.Unlock()
			if n > 0 {
				once.Do(func() { close(caught) })
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	res, err := d.fetcher.Fetch(ctx, root, ids(good1, bad, good2), progress)
	if err != nil {
		t.Fatalf("fetch with a corrupt provider: %v", err)
	}
	if !slices.Equal(res.BadPeers, ids(bad)) {
		t.Fatalf("bad peers %v, want [%s]", res.BadPeers, bad.h.ID())
	}
	if res.PerPeer[bad.h.ID()] != 0 {
		t.Fatalf("%d chunks accepted from the corrupt provider", res.PerPeer[bad.h.ID()])
	}
	dst := filepath.Join(t.TempDir(), "got.bin")
	if err := d.store.Export(ctx, root, dst); err != nil {
		t.Fatal(err)
	}
	if fileHash(t, dst) != sum {
		t.Fatal("fetch with a corrupt provider is not byte-identical")
	}

	// Only corrupt providers: hash mismatch after all were tried.
	e := newNode(t)
	link(hosts(bad, e)...)
	_, err = e.fetcher.Fetch(ctx, root, ids(bad), nil)
	if !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("fetch from a corrupt provider only: %v, want ErrHashMismatch", err)
	}
}

// TestConcurrentFetchesOfOneRoot: the node's join fetch and the
// Replicator may pull the same root at once; both succeed and the store
// ends with one complete copy.
func TestConcurrentFetchesOfOneRoot(t *testing.T) {
	ctx := testCtx(t)
	a, b, d := newNode(t), newNode(t), newNode(t)
	link(hosts(a, b, d)...)
	src, sum := writeRandom(t, 25*64<<10+1, 17)
	root := saveOn(t, src, 2, a, b)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := d.fetcher.Fetch(ctx, root, ids(a, b), nil)
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent fetch: %v", err)
		}
	}
	if in, ok := d.store.Stat(root); !ok || !in.Complete {
		t.Fatalf("after concurrent fetches: %+v, %v; want complete", in, ok)
	}
	dst := filepath.Join(t.TempDir(), "got.bin")
	if err := d.store.Export(ctx, root, dst); err != nil {
		t.Fatal(err)
	}
	if fileHash(t, dst) != sum {
		t.Fatal("not byte-identical")
	}
}

func TestFetchEmptyCheckpoint(t *testing.T) {
	ctx := testCtx(t)
	a, d := newNode(t), newNode(t)
	link(a.h, d.h)
	src, sum := writeRandom(t, 0, 1)
	root := saveOn(t, src, 1, a)
	if _, err := d.fetcher.Fetch(ctx, root, ids(a), nil); err != nil {
		t.Fatalf("fetch of an empty checkpoint: %v", err)
	}
	dst := filepath.Join(t.TempDir(), "got.bin")
	if err := d.store.Export(ctx, root, dst); err != nil {
		t.Fatal(err)
	}
	if fileHash(t, dst) != sum {
		t.Fatal("empty checkpoint not byte-identical")
	}
}

// TestFetchRateLimited checks a lower bound only (load can only make the
// fetch slower): 1.25 MiB at 2 MiB/s with a 64 KiB bucket takes at least
// about 0.59 s, where an unlimited loopback fetch takes a few ms.
func TestFetchRateLimited(t *testing.T) {
	ctx := testCtx(t)
	a, d := newNode(t), newNode(t)
	link(a.h, d.h)
	src, _ := writeRandom(t, 20*64<<10, 3)
	root := saveOn(t, src, 1, a)
	cfg := LocalFetcherConfig()
	cfg.RateLimit = 2 << 20
	f, err := NewFetcher(cfg, d.h, d.store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := f.Fetch(ctx, root, ids(a), nil); err != nil {
		t.Fatal(err)
	}
	if took, floor := time.Since(start), 550*time.Millisecond; took < floor {
		t.Fatalf("rate-limited fetch took %v, want at least %v", took, floor)
	}
}
