package checkpoint

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// storeEmpty fails the test if s holds any entry or leftover on disk.
func storeEmpty(t *testing.T, s *Store) {
	t.Helper()
	if got := s.List(); len(got) != 0 {
		t.Fatalf("store holds %+v, want nothing", got)
	}
	ents, err := os.ReadDir(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != tmpDirName && e.Name() != "LOCK" {
			t.Fatalf("store directory holds %s, want nothing allocated", e.Name())
		}
	}
	if tmp, _ := os.ReadDir(filepath.Join(s.Dir(), tmpDirName)); len(tmp) != 0 {
		t.Fatalf("store tmp holds %d entries, want none", len(tmp))
	}
}

func freeBytes(n int64) func() (int64, error) { return func() (int64, error) { return n, nil } }

// TestStoreRefusesWhatDoesNotFit: a manifest larger than the free space is
// refused before anything is allocated, with a NoSpaceError that is
// ErrDiskFull; so is a Put of a file larger than the free space.
func TestStoreRefusesWhatDoesNotFit(t *testing.T) {
	ctx := testCtx(t)
	cfg := LocalStoreConfig()
	s := openStore(t, t.TempDir(), cfg)
	s.free = freeBytes(1 << 20)
	m := Manifest{Step: 1, Size: 2 << 20, ChunkSize: cfg.ChunkSize, Chunks: make([]Hash, NumChunks(2<<20, cfg.ChunkSize))}
	mb, _ := m.Encode()
	root, _ := m.Root()
	_, err := s.beginPartial(root, mb)
	var ns *NoSpaceError
	if !errors.As(err, &ns) || !errors.Is(err, ErrDiskFull) || ns.Need != 2<<20 || ns.Free != 1<<20 || ns.Root != root {
		t.Fatalf("beginPartial beyond free space: %v, want a NoSpaceError (need 2 MiB, free 1 MiB) that is ErrDiskFull", err)
	}
	storeEmpty(t, s)
	src, _ := writeRandom(t, 1<<20+1, 1)
	if _, _, err := s.Put(ctx, src, 1); !errors.As(err, &ns) || !errors.Is(err, ErrDiskFull) {
		t.Fatalf("Put beyond free space: %v, want a NoSpaceError", err)
	}
	storeEmpty(t, s)
	// Within the free space both work.
	s.free = freeBytes(4 << 20)
	release, err := s.beginPartial(root, mb)
	if err != nil {
		t.Fatal(err)
	}
	release()
	if _, _, err := s.Put(ctx, src, 1); err != nil {
		t.Fatal(err)
	}
}

// TestFetchRefusesWhatDoesNotFit: a fetch whose manifest exceeds the free
// space allocates nothing, fetches no chunk and counts the refusal.
func TestFetchRefusesWhatDoesNotFit(t *testing.T) {
	ctx := testCtx(t)
	a, d := newNode(t), newNode(t)
	link(a.h, d.h)
	src, _ := writeRandom(t, 8*64<<10, 5)
	root := saveOn(t, src, 3, a)
	d.store.free = freeBytes(4 * 64 << 10)
	_, err := d.fetcher.Fetch(ctx, root, ids(a), nil)
	var ns *NoSpaceError
	if !errors.As(err, &ns) || !errors.Is(err, ErrDiskFull) {
		t.Fatalf("fetch beyond free space: %v, want a NoSpaceError", err)
	}
	if got := d.metrics.refusedCount("no_space"); got != 1 {
		t.Fatalf("refused no_space counted %d times, want 1", got)
	}
	if got := a.metrics.served.Load(); got != 0 {
		t.Fatalf("provider served %d chunks, want none", got)
	}
	storeEmpty(t, d.store)
}

// replicaPair is a writer w holding a checkpoint and a replicator node r
// (R=2, so r is chosen) whose catalog is fed by hand.
type replicaPair struct {
	w, r *tnode
	cat  *Catalog
	rep  *Replicator
	root Root
}

func newReplicaPair(t *testing.T, trust func(peer.ID, uint64) bool) *replicaPair {
	t.Helper()
	p := &replicaPair{w: newNode(t), r: newNode(t)}
	link(p.w.h, p.r.h)
	src, _ := writeRandom(t, 6*64<<10+9, 77)
	p.root = saveOn(t, src, 40, p.w)
	p.cat = newCatalog(t, p.r, (&memBus{}).join(p.r.h.ID()))
	cfg := LocalReplicatorConfig()
	cfg.Trust = trust
	var err error
	members := func() []peer.ID { return ids(p.w, p.r) }
	if p.rep, err = NewReplicator(cfg, p.r.h, p.r.store, p.cat, members, nil, p.r.metrics); err != nil {
		t.Fatal(err)
	}
	return p
}

// announce delivers w's announcement of root claiming size bytes.
func (p *replicaPair) announce(t *testing.T, size int64) {
	t.Helper()
	b, err := Announcement{Step: 40, Root: p.root, Size: size, Provider: p.w.h.ID()}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cat.Handle(b, p.w.h.ID()); err != nil {
		t.Fatal(err)
	}
}

// untouched fails the test if r contacted w or allocated anything.
func (p *replicaPair) untouched(t *testing.T) {
	t.Helper()
	if c := p.r.h.Network().Connectedness(p.w.h.ID()); c == network.Connected {
		t.Fatal("the replicator connected to the provider, want no request at all")
	}
	if got := p.w.metrics.served.Load(); got != 0 {
		t.Fatalf("provider served %d chunks, want none", got)
	}
	storeEmpty(t, p.r.store)
}

// TestReplicatorRefusesWhatDoesNotFit: an announcement whose size exceeds
// the free space is not pulled (nothing requested, nothing allocated) and
// is counted once, however often replication is evaluated.
func TestReplicatorRefusesWhatDoesNotFit(t *testing.T) {
	p := newReplicaPair(t, nil)
	p.r.store.free = freeBytes(64 << 10)
	p.announce(t, 1<<40) // a fake newest checkpoint of 1 TiB
	for range 3 {
		if got := p.rep.toPull(); len(got) != 0 {
			t.Fatalf("toPull = %+v, want nothing", got)
		}
	}
	if got := p.r.metrics.refusedCount("no_space"); got != 1 {
		t.Fatalf("refused no_space counted %d times, want 1", got)
	}
	p.untouched(t)
}

// TestReplicatorManifestLargerThanAnnounced: an announcement that claims
// a small size passes the first check; the manifest's real size is then
// refused before anything is allocated, counted once, and not requested
// again while it does not fit.
func TestReplicatorManifestLargerThanAnnounced(t *testing.T) {
	ctx := testCtx(t)
	p := newReplicaPair(t, nil)
	p.r.store.free = freeBytes(64 << 10)
	p.announce(t, 10)
	pull := p.rep.toPull()
	if len(pull) != 1 {
		t.Fatalf("toPull = %+v, want the checkpoint", pull)
	}
	p.rep.pull(ctx, pull[0])
	if got := p.rep.toPull(); len(got) != 0 {
		t.Fatalf("toPull after the manifest was refused = %+v, want nothing", got)
	}
	if got := p.r.metrics.refusedCount("no_space"); got != 1 {
		t.Fatalf("refused no_space counted %d times, want 1", got)
	}
	if got := p.w.metrics.served.Load(); got != 0 {
		t.Fatalf("provider served %d chunks, want none", got)
	}
	storeEmpty(t, p.r.store)
}

// TestReplicatorTrustHook: while Trust refuses the only provider, nothing
// is requested or allocated (counted once); once it trusts it, the
// checkpoint is replicated.
func TestReplicatorTrustHook(t *testing.T) {
	ctx := testCtx(t)
	var trusted bool
	var asked []uint64
	var p *replicaPair
	p = newReplicaPair(t, func(author peer.ID, step uint64) bool {
		asked = append(asked, step)
		return trusted && author == p.w.h.ID()
	})
	p.announce(t, 6*64<<10+9)
	for range 3 {
		if got := p.rep.toPull(); len(got) != 0 {
			t.Fatalf("toPull with an untrusted provider = %+v, want nothing", got)
		}
	}
	if got := p.r.metrics.refusedCount("untrusted"); got != 1 {
		t.Fatalf("refused untrusted counted %d times, want 1", got)
	}
	if len(asked) == 0 || asked[0] != 40 {
		t.Fatalf("Trust asked about steps %v, want 40", asked)
	}
	p.untouched(t)

	trusted = true
	pull := p.rep.toPull()
	if len(pull) != 1 || !slicesEqual(pull[0].Providers, ids(p.w)) {
		t.Fatalf("toPull once trusted = %+v, want the checkpoint from w", pull)
	}
	p.rep.pull(ctx, pull[0])
	if in, ok := p.r.store.Stat(p.root); !ok || !in.Complete {
		t.Fatalf("after a trusted pull: %+v, %v; want complete", in, ok)
	}
}

// TestReplicatorUntrustedTakeNoWindow: with Window 1, an untrusted
// announcement of a higher step does not hide the newest trusted one.
func TestReplicatorUntrustedTakeNoWindow(t *testing.T) {
	evil := testPeerID(t)
	p := newReplicaPair(t, func(author peer.ID, _ uint64) bool { return author != evil })
	p.announce(t, 6*64<<10+9)
	fake, _ := Announcement{Step: 1 << 40, Root: Root{0xee}, Size: 10, Provider: evil}.Encode()
	if err := p.cat.Handle(fake, evil); err != nil {
		t.Fatal(err)
	}
	pull := p.rep.toPull()
	if len(pull) != 1 || pull[0].Root != p.root {
		t.Fatalf("toPull = %+v, want the trusted checkpoint %s", pull, p.root.Short())
	}
	if got := p.r.metrics.refusedCount("untrusted"); got != 1 {
		t.Fatalf("refused untrusted counted %d times, want 1", got)
	}
}
