package checkpoint

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func newCatalog(t testing.TB, n *tnode, ann Announcer) *Catalog {
	t.Helper()
	c, err := NewCatalog(LocalCatalogConfig(), n.h.ID(), n.store, ann, nil, n.metrics)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCatalogAnnouncements(t *testing.T) {
	ctx := testCtx(t)
	bus := &memBus{}
	a, b := newNode(t), newNode(t)
	link(a.h, b.h)
	ca, cb := newCatalog(t, a, bus.join(a.h.ID())), newCatalog(t, b, bus.join(b.h.ID()))
	runBG(t, ca.Run)
	runBG(t, cb.Run)
	src, _ := writeRandom(t, 100<<10, 1)
	root := saveOn(t, src, 3, a)
	if err := ca.Announce(ctx, root); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b learns a as provider", func() bool { return slices.Equal(cb.Providers(root), ids(a)) })
	k, ok := cb.LatestComplete()
	if !ok || k.Root != root || k.Step != 3 || k.Size != 100<<10 || k.Local {
		t.Fatalf("LatestComplete = %+v, %v", k, ok)
	}
	if k, _ := ca.LatestComplete(); !k.Local || len(k.Providers) != 0 || k.Holders() != 1 {
		t.Fatalf("writer's own view = %+v, want local with no remote providers", k)
	}
	if err := ca.Announce(ctx, Root{4}); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("announcing an unheld root: %v, want ErrIncomplete", err)
	}

	// A newcomer learns providers from the periodic re-announcements.
	c := newNode(t)
	cc := newCatalog(t, c, bus.join(c.h.ID()))
	runBG(t, cc.Run)
	eventually(t, "newcomer learns a", func() bool { return slices.Equal(cc.Providers(root), ids(a)) })

	// b fetches and announces: everyone sees two providers.
	if _, err := b.fetcher.Fetch(ctx, root, cb.Providers(root), nil); err != nil {
		t.Fatal(err)
	}
	if err := cb.Announce(ctx, root); err != nil {
		t.Fatal(err)
	}
	want := ids(a, b)
	slices.Sort(want)
	eventually(t, "c sees a and b", func() bool { return slices.Equal(cc.Providers(root), want) })

	cc.ReportBad(root, a.h.ID())
	if got := cc.Providers(root); !slices.Equal(got, ids(b)) {
		t.Fatalf("after ReportBad(a): %v, want [b]", got)
	}
	cc.RemoveProvider(b.h.ID())
	if got := cc.Providers(root); slices.Contains(got, b.h.ID()) {
		t.Fatalf("after RemoveProvider(b): %v still has b", got)
	}
}

func TestCatalogRejectsForgedAndMalformed(t *testing.T) {
	a, b, evil := newNode(t), newNode(t), newNode(t)
	cb := newCatalog(t, b, (&memBus{}).join(b.h.ID()))
	forged, _ := Announcement{Step: 1, Root: Root{1}, Size: 10, Provider: a.h.ID()}.Encode()
	if err := cb.Handle(forged, evil.h.ID()); !errors.Is(err, ErrForgedAnnouncement) {
		t.Fatalf("forged: %v, want ErrForgedAnnouncement", err)
	}
	if err := cb.Handle([]byte("RMCA garbage"), evil.h.ID()); !errors.Is(err, ErrBadAnnouncement) {
		t.Fatalf("malformed: %v, want ErrBadAnnouncement", err)
	}
	honest, _ := Announcement{Step: 1, Root: Root{1}, Size: 10, Provider: a.h.ID()}.Encode()
	if err := cb.Handle(honest, a.h.ID()); err != nil {
		t.Fatal(err)
	}
	// The same root claimed with another step is a lie about its manifest.
	conflict, _ := Announcement{Step: 99, Root: Root{1}, Size: 10, Provider: evil.h.ID()}.Encode()
	if err := cb.Handle(conflict, evil.h.ID()); !errors.Is(err, ErrBadAnnouncement) {
		t.Fatalf("conflicting: %v, want ErrBadAnnouncement", err)
	}
	if got := cb.Providers(Root{1}); !slices.Equal(got, ids(a)) {
		t.Fatalf("providers %v, want only the honest a", got)
	}
	for reason, want := range map[string]int{"forged": 1, "malformed": 1, "conflicting": 1} {
		if got := b.metrics.rejectedCount(reason); got != want {
			t.Errorf("rejected %q = %d, want %d", reason, got, want)
		}
	}
	// Providers expire without re-announcements.
	cb.now = func() time.Time { return time.Now().Add(2 * LocalCatalogConfig().ProviderTTL) }
	if got := cb.Providers(Root{1}); len(got) != 0 {
		t.Fatalf("providers after TTL: %v, want none", got)
	}
	if _, ok := cb.LatestComplete(); ok {
		t.Fatal("LatestComplete with no live provider, want none")
	}
}

func TestCatalogConfigValidate(t *testing.T) {
	c := DefaultCatalogConfig()
	c.ProviderTTL = c.ReannounceInterval
	if c.Validate() == nil {
		t.Error("ProviderTTL == ReannounceInterval accepted")
	}
	if err := DefaultCatalogConfig().Validate(); err != nil {
		t.Error(err)
	}
	if _, err := NewCatalog(DefaultCatalogConfig(), "", nil, nil, nil, nil); err == nil {
		t.Error("NewCatalog without store and announcer accepted")
	}
}
