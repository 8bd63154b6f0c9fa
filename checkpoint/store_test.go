package checkpoint

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestStorePutExportRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	cfg := LocalStoreConfig()
	for _, size := range []int{0, 1, int(cfg.ChunkSize), 3*int(cfg.ChunkSize) + 17} {
		s := openStore(t, t.TempDir(), cfg)
		src, sum := writeRandom(t, size, uint64(size))
		m, root, err := s.Put(ctx, src, 42)
		if err != nil {
			t.Fatalf("Put(%d bytes): %v", size, err)
		}
		if m.Size != int64(size) || m.Step != 42 || len(m.Chunks) != NumChunks(int64(size), cfg.ChunkSize) {
			t.Fatalf("manifest = step %d size %d chunks %d", m.Step, m.Size, len(m.Chunks))
		}
		if r, _ := m.Root(); r != root {
			t.Fatalf("root %s, manifest hashes to %s", root, r)
		}
		dst := filepath.Join(t.TempDir(), "out.bin")
		if err := s.Export(ctx, root, dst); err != nil {
			t.Fatalf("Export: %v", err)
		}
		if got := fileHash(t, dst); got != sum {
			t.Fatalf("exported sha256 %x, want %x", got, sum)
		}
		// Content addressing: the same bytes and step give the same root.
		_, again, err := s.Put(ctx, src, 42)
		if err != nil || again != root {
			t.Fatalf("second Put = %s, %v; want %s", again, err, root)
		}
		if got := len(s.List()); got != 1 {
			t.Fatalf("List has %d entries, want 1", got)
		}
		if in, ok := s.Latest(); !ok || in.Root != root || !in.Complete {
			t.Fatalf("Latest = %+v, %v", in, ok)
		}
	}
}

func TestStoreReopenVerifiesAndResumes(t *testing.T) {
	ctx := testCtx(t)
	cfg := LocalStoreConfig()
	dir := t.TempDir()
	s := openStore(t, dir, cfg)
	src, _ := writeRandom(t, 5*int(cfg.ChunkSize)+3, 1)
	m, root, err := s.Put(ctx, src, 1)
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := m.Encode()
	s.Close()

	// Simulate crashes: a half-written Put in tmp, a partial fetch holding
	// chunks 0 and 2 of another checkpoint, a partial with a torn
	// manifest, and corruption of chunk 3 of the complete checkpoint.
	half := filepath.Join(dir, tmpDirName, "put-123")
	mustMkdir(t, half)
	mustWrite(t, filepath.Join(half, dataFile), []byte("half"))
	src2, sum2 := writeRandom(t, 4*int(cfg.ChunkSize), 2)
	other := openStore(t, t.TempDir(), cfg)
	m2, root2, err := other.Put(ctx, src2, 2)
	if err != nil {
		t.Fatal(err)
	}
	mb2, _ := m2.Encode()
	data2, _ := os.ReadFile(filepath.Join(other.Dir(), root2.String(), dataFile))
	p2 := filepath.Join(dir, root2.String()+partialSuffix)
	mustMkdir(t, p2)
	mustWrite(t, filepath.Join(p2, manifestFile), mb2)
	partialData := make([]byte, len(data2))
	copy(partialData[0:], data2[:cfg.ChunkSize])
	copy(partialData[2*cfg.ChunkSize:], data2[2*cfg.ChunkSize:3*cfg.ChunkSize])
	mustWrite(t, filepath.Join(p2, dataFile), partialData[:3*cfg.ChunkSize]) // torn: short file
	torn := filepath.Join(dir, Root{9}.String()+partialSuffix)
	mustMkdir(t, torn)
	mustWrite(t, filepath.Join(torn, manifestFile), mb[:10])
	corruptByte(t, filepath.Join(dir, root.String(), dataFile), 3*int64(cfg.ChunkSize)+5)

	s = openStore(t, dir, cfg)
	if ents, _ := os.ReadDir(filepath.Join(dir, tmpDirName)); len(ents) != 0 {
		t.Fatalf("tmp holds %d leftovers after open, want 0", len(ents))
	}
	if _, err := os.Stat(torn); !os.IsNotExist(err) {
		t.Fatalf("torn partial still present: %v", err)
	}
	in, ok := s.Stat(root)
	if !ok || in.Complete || in.HaveChunks != len(m.Chunks)-1 {
		t.Fatalf("corrupted checkpoint: %+v (held %v), want partial missing one chunk", in, ok)
	}
	if err := s.Export(ctx, root, filepath.Join(t.TempDir(), "x")); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Export of partial: %v, want ErrIncomplete", err)
	}
	in2, ok := s.Stat(root2)
	if !ok || in2.Complete || in2.HaveChunks != 2 {
		t.Fatalf("partial fetch: %+v (held %v), want 2 verified chunks", in2, ok)
	}
	if have := s.haveChunks(root2); !have[0] || have[1] || !have[2] || have[3] {
		t.Fatalf("haveChunks = %v, want [true false true false]", have)
	}
	// Completing the partial with the missing chunks promotes it.
	release, err := s.beginPartial(root2, mb2)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for _, i := range []int{1, 3} {
		if err := s.writeChunk(root2, i, data2[i*int(cfg.ChunkSize):(i+1)*int(cfg.ChunkSize)]); err != nil {
			t.Fatalf("writeChunk %d: %v", i, err)
		}
	}
	if err := s.writeChunk(root2, 0, data2[cfg.ChunkSize:2*cfg.ChunkSize]); err != nil {
		t.Fatalf("rewriting a held chunk: %v, want no-op", err)
	}
	if err := s.finish(root2); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "out")
	if err := s.Export(ctx, root2, dst); err != nil {
		t.Fatal(err)
	}
	if got := fileHash(t, dst); got != sum2 {
		t.Fatalf("exported %x, want %x", got, sum2)
	}
	_ = mb
}

func TestStoreWriteChunkRejectsBadData(t *testing.T) {
	cfg := LocalStoreConfig()
	s := openStore(t, t.TempDir(), cfg)
	m := Manifest{Step: 1, Size: int64(cfg.ChunkSize), ChunkSize: cfg.ChunkSize, Chunks: []Hash{{1}}}
	mb, _ := m.Encode()
	root, _ := m.Root()
	if _, err := s.beginPartial(Root{7}, mb); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("beginPartial with the wrong root: %v, want ErrHashMismatch", err)
	}
	release, err := s.beginPartial(root, mb)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := s.writeChunk(root, 0, make([]byte, cfg.ChunkSize)); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("writeChunk bad data: %v, want ErrHashMismatch", err)
	}
	if err := s.writeChunk(root, 1, nil); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("writeChunk index 1: %v, want ErrOutOfRange", err)
	}
	if err := s.finish(root); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("finish: %v, want ErrIncomplete", err)
	}
}

func TestStoreDiskFull(t *testing.T) {
	cfg := LocalStoreConfig()
	s := openStore(t, t.TempDir(), cfg)
	data := make([]byte, cfg.ChunkSize)
	m := Manifest{Step: 1, Size: int64(len(data)), ChunkSize: cfg.ChunkSize, Chunks: []Hash{sha256Sum(data)}}
	mb, _ := m.Encode()
	root, _ := m.Root()
	release, err := s.beginPartial(root, mb)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	s.writeAt = func(*os.File, []byte, int64) (int, error) {
		return 0, &os.PathError{Op: "write", Path: "data", Err: syscall.ENOSPC}
	}
	if err := s.writeChunk(root, 0, data); !errors.Is(err, ErrDiskFull) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writeChunk on a full disk: %v, want ErrDiskFull wrapping ENOSPC", err)
	}
}

func TestStoreRetention(t *testing.T) {
	ctx := testCtx(t)
	cfg := LocalStoreConfig()
	cfg.Keep = 2
	s := openStore(t, t.TempDir(), cfg)
	roots := make([]Root, 5)
	for i := range roots {
		src, _ := writeRandom(t, 1000+i, uint64(i))
		_, r, err := s.Put(ctx, src, uint64(10+i))
		if err != nil {
			t.Fatal(err)
		}
		roots[i] = r
		if i == 1 {
			release, err := s.Pin(r) // pinned: being served
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(release)
			defer func() {
				release()
				if _, ok := s.Stat(r); ok {
					t.Errorf("step 11 still held after unpin, want pruned")
				}
			}()
		}
	}
	var steps []uint64
	for _, in := range s.List() {
		steps = append(steps, in.Step)
	}
	if want := []uint64{14, 13, 11}; !equalSteps(steps, want) {
		t.Fatalf("held steps %v, want %v (newest 2 + pinned)", steps, want)
	}
	for _, i := range []int{0, 2} {
		if _, err := os.Stat(filepath.Join(s.Dir(), roots[i].String())); !os.IsNotExist(err) {
			t.Fatalf("step %d still on disk: %v", 10+i, err)
		}
	}
}

func equalSteps(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestStoreConfigValidate(t *testing.T) {
	bad := []StoreConfig{{ChunkSize: 1, Keep: 3}, {ChunkSize: 4 << 20, Keep: 0}, {}}
	for _, c := range bad {
		if c.Validate() == nil {
			t.Errorf("Validate(%+v) = nil, want error", c)
		}
	}
	if err := DefaultStoreConfig().Validate(); err != nil {
		t.Errorf("DefaultStoreConfig: %v", err)
	}
}

func mustMkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func corruptByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestStoreLockedAgainstSecondOpen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, LocalStoreConfig())
	if _, err := OpenStore(dir, LocalStoreConfig(), nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("second OpenStore: %v, want ErrLocked", err)
	}
	s.Close()
	s2, err := OpenStore(dir, LocalStoreConfig(), nil)
	if err != nil {
		t.Fatalf("OpenStore after Close: %v", err)
	}
	s2.Close()
}
