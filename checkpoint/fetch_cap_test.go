package checkpoint

import (
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestFetcherPerPeerStreamCap: concurrent fetches through one Fetcher
// never hold more than its per-peer cap of streams to one provider (the
// provider would reset the excess), and all of them complete.
func TestFetcherPerPeerStreamCap(t *testing.T) {
	ctx := testCtx(t)
	prov, cli := newHost(t), newNode(t)
	link(prov, cli.h)
	store := openStore(t, t.TempDir(), LocalStoreConfig())
	m := newCountMetrics()
	srv, err := NewServer(LocalServerConfig(), prov, store, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	const cap, fetches = 2, 3
	var mu sync.Mutex
	peak := 0
	first := true
	streams := func() int {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.perPeer[cli.h.ID()]
	}
	m.hold = func() {
		mu.Lock()
		wait := first
		first = false
		mu.Unlock()
		if wait {
			// Give every fetch the chance to open its streams (bounded):
			// without a cap, more than cap are open before a chunk is sent.
			deadline := time.Now().Add(2 * time.Second)
			for streams() <= cap && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}
		mu.Lock()
		peak = max(peak, streams())
		mu.Unlock()
	}
	runBG(t, srv.Run)
	cfg := LocalFetcherConfig()
	cfg.StreamsPerProvider = 2
	cfg.MaxStreamsPerPeer = cap
	f, err := NewFetcher(cfg, cli.h, cli.store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var roots []Root
	for i := range fetches {
		src, _ := writeRandom(t, 12*64<<10, uint64(40+i))
		_, r, err := store.Put(ctx, src, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, r)
	}
	errs := make(chan error, fetches)
	for _, r := range roots {
		go func() {
			_, err := f.Fetch(ctx, r, []peer.ID{prov.ID()}, nil)
			errs <- err
		}()
	}
	for range fetches {
		if err := <-errs; err != nil {
			t.Fatalf("fetch: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if peak > cap {
		t.Fatalf("%d streams open to one provider at once, want at most %d", peak, cap)
	}
}
