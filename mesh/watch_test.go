package mesh

import (
	"context"
	"testing"
	"time"
)

// TestWatchSlowReader: a Watch channel nobody reads does not stall failure
// detection, and when finally read it holds the latest view.
func TestWatchSlowReader(t *testing.T) {
	a := startNode(t, localConfig(t.TempDir()), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stalled := a.Watch(ctx) // never read until the end
	reader := a.Watch(ctx)
	cfg := localConfig(t.TempDir())
	cfg.Join = []string{a.joinAddr()}
	b := startNode(t, cfg, nil)
	waitFor(t, "a sees b", func() (bool, string) { return seesAlive(a, a, b) })
	waitFor(t, "watch delivers b alive", func() (bool, string) {
		v := <-reader
		m, ok := v.Member(b.Self())
		return ok && m.State == Alive, ""
	})

	b.crash(t)
	waitFor(t, "a sees b dead", func() (bool, string) {
		st, _ := stateOf(a, b.Self())
		return st == Dead, st.String()
	})
	v := <-stalled
	if m, _ := v.Member(b.Self()); m.State != Dead {
		t.Errorf("stalled watcher's view has b %v, want dead (latest view)", m.State)
	}
	cancel()
	waitFor(t, "watch channels closed", func() (bool, string) {
		for _, ch := range []<-chan View{stalled, reader} {
			select {
			case _, ok := <-ch:
				if ok {
					return false, "still open"
				}
			case <-time.After(10 * time.Millisecond):
				return false, "still open"
			}
		}
		return true, ""
	})
}

// TestWatchClosedWhenRunEnds: Run returning closes every watcher.
func TestWatchClosedWhenRunEnds(t *testing.T) {
	a := startNode(t, localConfig(t.TempDir()), nil)
	ch := a.Watch(context.Background())
	if v, ok := <-ch; !ok || len(v.Members) != 1 || v.Members[0].ID != a.Self() {
		t.Fatalf("first view %+v (open %v), want only self", v, ok)
	}
	a.stop(t)
	deadline := time.After(testTimeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel not closed after Run returned")
		}
	}
}
