package checkpoint

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func heldSteps(s *Store) []uint64 {
	var steps []uint64
	for _, in := range s.List() {
		if in.Complete {
			steps = append(steps, in.Step)
		}
	}
	return steps
}

// TestStoreRetentionByRecency: after a restart of the mesh at a lower step,
// retention keeps the newest saves by arrival, not the highest steps, and
// no save is answered ok and then dropped.
func TestStoreRetentionByRecency(t *testing.T) {
	ctx := testCtx(t)
	cfg := LocalStoreConfig()
	cfg.Keep = 2
	s := openStore(t, t.TempDir(), cfg)
	put := func(step uint64) Root {
		t.Helper()
		src, _ := writeRandom(t, 3000, step)
		_, root, err := s.Put(ctx, src, step)
		if err != nil {
			t.Fatalf("Put(step %d): %v", step, err)
		}
		if in, ok := s.Stat(root); !ok || !in.Complete {
			t.Fatalf("Put(step %d) answered ok, but the store dropped it at once", step)
		}
		return root
	}
	for _, step := range []uint64{100, 200, 300, 1, 2, 3} {
		put(step)
	}
	if got, want := heldSteps(s), []uint64{3, 2}; !equalSteps(got, want) {
		t.Fatalf("held steps %v, want %v (the two newest saves)", got, want)
	}
}

// TestStoreRetentionRecencySurvivesReopen: the arrival order is on disk,
// so a reopened store still prunes the oldest arrival, not the lowest step.
func TestStoreRetentionRecencySurvivesReopen(t *testing.T) {
	ctx := testCtx(t)
	cfg := LocalStoreConfig()
	cfg.Keep = 3
	dir := t.TempDir()
	s := openStore(t, dir, cfg)
	for _, step := range []uint64{300, 1, 2} {
		src, _ := writeRandom(t, 2000, step)
		if _, _, err := s.Put(ctx, src, step); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openStore(t, dir, cfg)
	if got, want := heldSteps(s), []uint64{300, 2, 1}; !equalSteps(got, want) {
		t.Fatalf("after reopen: held %v, want %v", got, want)
	}
	src, _ := writeRandom(t, 2000, 3)
	if _, _, err := s.Put(ctx, src, 3); err != nil {
		t.Fatal(err)
	}
	if got, want := heldSteps(s), []uint64{3, 2, 1}; !equalSteps(got, want) {
		t.Fatalf("held %v, want %v (step 300 arrived first)", got, want)
	}
}

// TestStorePutDroppedAtOnceIsError: when a newer save lands between
// storing and retention (Keep 1), the first Put's checkpoint is gone when
// it returns, and Put says so instead of answering with a root it does
// not hold.
func TestStorePutDroppedAtOnceIsError(t *testing.T) {
	ctx := testCtx(t)
	cfg := LocalStoreConfig()
	cfg.Keep = 1
	s := openStore(t, t.TempDir(), cfg)
	first, _ := writeRandom(t, 1500, 1)
	second, _ := writeRandom(t, 1500, 2)
	var newer Root
	var newerErr error
	s.putHook = func() {
		s.putHook = nil // only inside the first Put
		_, newer, newerErr = s.Put(ctx, second, 2)
	}
	_, root, err := s.Put(ctx, first, 1)
	if !errors.Is(err, ErrDropped) {
		t.Fatalf("Put whose checkpoint retention dropped at once: root %s, %v; want ErrDropped", root, err)
	}
	if newerErr != nil {
		t.Fatalf("the newer Put: %v", newerErr)
	}
	if got := s.List(); len(got) != 1 || got[0].Root != newer {
		t.Fatalf("held %+v, want only the newer save", got)
	}
}

// TestStoreRepeatedPutIsNewArrival: putting the same bytes again makes
// them the most recent arrival, so retention keeps them.
func TestStoreRepeatedPutIsNewArrival(t *testing.T) {
	ctx := testCtx(t)
	cfg := LocalStoreConfig()
	cfg.Keep = 2
	s := openStore(t, t.TempDir(), cfg)
	a, _ := writeRandom(t, 1000, 1)
	b, _ := writeRandom(t, 1000, 2)
	c, _ := writeRandom(t, 1000, 3)
	for _, p := range []struct {
		path string
		step uint64
	}{{a, 10}, {b, 20}, {a, 10}, {c, 30}} {
		if _, _, err := s.Put(ctx, p.path, p.step); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := heldSteps(s), []uint64{30, 10}; !equalSteps(got, want) {
		t.Fatalf("held %v, want %v (step 10 saved again after 20)", got, want)
	}
}

// TestStoreLockTakenBeforeAnythingIsTouched: a second open of a store in
// use fails with ErrLocked and leaves its scratch files and partial
// entries alone.
func TestStoreLockTakenBeforeAnythingIsTouched(t *testing.T) {
	dir := t.TempDir()
	openStore(t, dir, LocalStoreConfig())
	scratch := filepath.Join(dir, tmpDirName, "put-inflight")
	mustMkdir(t, scratch)
	mustWrite(t, filepath.Join(scratch, dataFile), []byte("being written"))
	junk := filepath.Join(dir, Root{3}.String()+partialSuffix)
	mustMkdir(t, junk)
	mustWrite(t, filepath.Join(junk, manifestFile), []byte("torn"))
	if _, err := OpenStore(dir, LocalStoreConfig(), nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("second OpenStore: %v, want ErrLocked", err)
	}
	for _, p := range []string{filepath.Join(scratch, dataFile), filepath.Join(junk, manifestFile)} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("second open touched %s: %v", p, err)
		}
	}
}
