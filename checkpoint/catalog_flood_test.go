package checkpoint

import (
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// catalogOnly returns a Catalog over an empty store with a silent
// announcer: Handle is driven by the test.
func catalogOnly(t *testing.T, cfg CatalogConfig) *Catalog {
	t.Helper()
	s := openStore(t, t.TempDir(), LocalStoreConfig())
	c, err := NewCatalog(cfg, testPeerID(t), s, (&memBus{}).join(""), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func announceAs(t *testing.T, c *Catalog, from peer.ID, step uint64, root Root) {
	t.Helper()
	b, err := Announcement{Step: step, Root: root, Size: 1 << 20, Provider: from}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Handle(b, from); err != nil {
		t.Fatalf("Handle(step %d from %s): %v", step, from, err)
	}
}

func listed(c *Catalog, root Root) bool {
	return slices.ContainsFunc(c.List(), func(k Known) bool { return k.Root == root })
}

// TestCatalogFloodKeepsOtherAuthors: one author's 300 fake high-step
// announcements do not evict a real checkpoint another author announced
// first, and within the flooder's own quota the oldest announcements go
// first, whatever their steps.
func TestCatalogFloodKeepsOtherAuthors(t *testing.T) {
	cfg := DefaultCatalogConfig()
	c := catalogOnly(t, cfg)
	honest, evil := testPeerID(t), testPeerID(t)
	real := Root{0x01, 0x7e}
	announceAs(t, c, honest, 10, real)
	const flood = 300
	fake := func(i int) Root { return Root{0xee, byte(i >> 8), byte(i)} }
	for i := range flood {
		// Decreasing steps, all above the real one: eviction by step would
		// drop the newest arrivals, eviction by arrival the oldest.
		announceAs(t, c, evil, uint64(1_000_000-i), fake(i))
	}
	if !listed(c, real) {
		t.Fatal("the real checkpoint was evicted by another author's flood")
	}
	if k, ok := c.LatestComplete(); !ok || k.Holders() == 0 {
		t.Fatalf("LatestComplete = %+v, %v", k, ok)
	}
	var kept []Root
	for _, k := range c.List() {
		if k.Root != real {
			kept = append(kept, k.Root)
		}
	}
	if len(kept) > cfg.MaxEntries-1 {
		t.Fatalf("%d fake entries kept, want at most %d", len(kept), cfg.MaxEntries-1)
	}
	// The last announcements survive, the first are gone.
	if !listed(c, fake(flood-1)) {
		t.Error("the flooder's newest announcement was evicted, want its oldest evicted first")
	}
	if listed(c, fake(0)) {
		t.Error("the flooder's oldest announcement is kept")
	}
}

// TestCatalogEntryCapEvictsLargestAuthor: when many authors together
// exceed MaxEntries, the oldest entries of the authors tracking the most
// go first; a one-checkpoint author keeps its entry.
func TestCatalogEntryCapEvictsLargestAuthor(t *testing.T) {
	cfg := LocalCatalogConfig()
	cfg.MaxEntries, cfg.MaxPerAuthor = 8, 4
	c := catalogOnly(t, cfg)
	honest := testPeerID(t)
	real := Root{0x01}
	announceAs(t, c, honest, 5, real)
	sybils := []peer.ID{testPeerID(t), testPeerID(t), testPeerID(t)}
	n := 0
	for _, s := range sybils {
		for range cfg.MaxPerAuthor {
			n++
			announceAs(t, c, s, uint64(1000+n), Root{0xee, byte(n)})
		}
	}
	if got := len(c.List()); got != cfg.MaxEntries {
		t.Fatalf("List has %d entries, want the cap %d", got, cfg.MaxEntries)
	}
	if !listed(c, real) {
		t.Fatal("the single-checkpoint author's entry was evicted")
	}
	// Each sybil's newest announcement survives.
	for i := range sybils {
		if !listed(c, Root{0xee, byte((i + 1) * cfg.MaxPerAuthor)}) {
			t.Errorf("sybil %d's newest entry was evicted before its older ones", i)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.MaxPerAuthor = cfg.MaxEntries + 1
	if cfg.Validate() == nil {
		t.Error("MaxPerAuthor above MaxEntries accepted")
	}
}
