package checkpoint

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestChosenPicksExactlyNeed: every member computes the same ranking, so
// exactly need of the non-holders consider themselves chosen, and when a
// chosen one leaves the member list another takes its place.
func TestChosenPicksExactlyNeed(t *testing.T) {
	var members []peer.ID
	for range 8 {
		members = append(members, testPeerID(t))
	}
	chosen := func(root Root, ms, holders []peer.ID, need int) []peer.ID {
		var out []peer.ID
		for _, m := range ms {
			if !slices.Contains(holders, m) && Chosen(root, m, ms, holders, need) {
				out = append(out, m)
			}
		}
		return out
	}
	for i := range 20 {
		root := Root{byte(i), byte(i * 7)}
		holders := members[:1]
		for need := 0; need <= 8; need++ {
			got := chosen(root, members, holders, need)
			if want := min(need, len(members)-1); len(got) != want {
				t.Fatalf("root %d need %d: %d chosen, want %d", i, need, len(got), want)
			}
		}
		first := chosen(root, members, holders, 1)[0]
		rest := slices.DeleteFunc(slices.Clone(members), func(p peer.ID) bool { return p == first })
		next := chosen(root, rest, holders, 1)
		if len(next) != 1 || next[0] == first {
			t.Fatalf("root %d: after %s left, chosen %v", i, first, next)
		}
	}
}

type memberList struct {
	mu sync.Mutex
	ps []peer.ID
}

func (m *memberList) get() []peer.ID {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.ps)
}

func (m *memberList) remove(p peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ps = slices.DeleteFunc(m.ps, func(q peer.ID) bool { return q == p })
}

// TestReplicationSurvivesWriter: the writer announces and dies; the
// checkpoint was replicated (by one chosen node, not all) and is
// re-replicated after the death, and a fresh node fetches it from the
// replicas.
func TestReplicationSurvivesWriter(t *testing.T) {
	ctx := testCtx(t)
	bus := &memBus{}
	w, r1, r2, r3, f := newNode(t), newNode(t), newNode(t), newNode(t), newNode(t)
	link(hosts(w, r1, r2, r3, f)...)
	members := &memberList{ps: ids(w, r1, r2, r3)}
	cfg := LocalReplicatorConfig()
	cfg.Patience = testTimeout // no escalation: the choice is the hash ranking alone
	cats := map[peer.ID]*Catalog{}
	stops := map[peer.ID][]context.CancelFunc{}
	for _, n := range []*tnode{w, r1, r2, r3} {
		c := newCatalog(t, n, bus.join(n.h.ID()))
		rep, err := NewReplicator(cfg, n.h, n.store, c, members.get, nil, n.metrics)
		if err != nil {
			t.Fatal(err)
		}
		cats[n.h.ID()] = c
		stops[n.h.ID()] = []context.CancelFunc{runBG(t, c.Run), runBG(t, rep.Run), n.stop}
	}
	cf := newCatalog(t, f, bus.join(f.h.ID()))
	runBG(t, cf.Run)

	src, sum := writeRandom(t, 20*64<<10+5, 21)
	root := saveOn(t, src, 50, w)
	if err := cats[w.h.ID()].Announce(ctx, root); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a replica", func() bool { return len(cf.Providers(root)) >= 2 })
	replicas := func() int64 {
		return r1.metrics.replicas.Load() + r2.metrics.replicas.Load() + r3.metrics.replicas.Load()
	}
	if got := replicas(); got != 1 {
		t.Fatalf("%d nodes pulled the checkpoint, want exactly 1 (R=2, the writer holds it)", got)
	}

	// The writer dies; membership drops it everywhere.
	for _, stop := range stops[w.h.ID()] {
		stop()
	}
	w.h.Close()
	members.remove(w.h.ID())
	for _, c := range append([]*Catalog{cf}, cats[r1.h.ID()], cats[r2.h.ID()], cats[r3.h.ID()]) {
		c.RemoveProvider(w.h.ID())
	}
	eventually(t, "re-replication to R=2 without the writer", func() bool {
		return len(cf.Providers(root)) >= 2 && !slices.Contains(cf.Providers(root), w.h.ID())
	})
	k, ok := cf.LatestComplete()
	if !ok || k.Root != root {
		t.Fatalf("LatestComplete = %+v, %v", k, ok)
	}
	if _, err := f.fetcher.Fetch(ctx, root, k.Providers, nil); err != nil {
		t.Fatalf("fetch from replicas: %v", err)
	}
	dst := filepath.Join(t.TempDir(), "got.bin")
	if err := f.store.Export(ctx, root, dst); err != nil {
		t.Fatal(err)
	}
	if fileHash(t, dst) != sum {
		t.Fatal("replica is not byte-identical")
	}
}

func TestReplicatorRateLimit(t *testing.T) {
	// The limiter is a token bucket sized to one chunk at the set rate.
	cfg := LocalFetcherConfig()
	cfg.RateLimit = 1 << 20
	fe := &Fetcher{cfg: cfg}
	l := fe.newLimiter(64 << 10)
	if l == nil || l.Limit() != 1<<20 || l.Burst() != 64<<10 {
		t.Fatalf("limiter = %v", l)
	}
	fe.cfg.RateLimit = 0
	if fe.newLimiter(64<<10) != nil {
		t.Fatal("limiter with RateLimit 0, want none")
	}
	if err := DefaultReplicatorConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}
