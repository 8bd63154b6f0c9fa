package roundrun

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// tmpfsDir points shmDir at a fresh directory on /dev/shm for one test
// (skipped where /dev/shm is not a tmpfs).
func tmpfsDir(t *testing.T) string {
	var fs unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &fs); err != nil || fs.Type != unix.TMPFS_MAGIC {
		t.Skip("/dev/shm is not a tmpfs here")
	}
	dir, err := os.MkdirTemp("/dev/shm", "ringmesh-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	old := shmDir
	shmDir = dir
	t.Cleanup(func() { shmDir = old })
	return dir
}

// TestResultOnTmpfs: the result buffer lives on tmpfs (no writeback to
// the disk every round), survives its process (a second open, as after a
// SIGKILL, sees the bytes), and a clean close removes it.
func TestResultOnTmpfs(t *testing.T) {
	shm := tmpfsDir(t)
	dataDir := t.TempDir()
	r, err := OpenResult(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.floats(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(r.path) != shm {
		t.Fatalf("result buffer at %s, want in %s", r.path, shm)
	}
	for i := range b {
		b[i] = float32(i)
	}
	again, err := OpenResult(dataDir) // the first is left open, as a killed process leaves its pages
	if err != nil {
		t.Fatal(err)
	}
	if again.path != r.path || again.len() != len(b) || again.mem[4*1000+1] != r.mem[4*1000+1] {
		t.Fatalf("reopened at %s with %d elements; want %s with %d and the same bytes", again.path, again.len(), r.path, len(b))
	}
	again.Close()
	if _, err := os.Stat(r.path); !os.IsNotExist(err) {
		t.Fatalf("after a clean close the tmpfs file is still there: %v", err)
	}
	r.Close()
}

// TestResultFallsBackToDisk: a tmpfs too small for the buffer leaves it
// in the data dir, with every page writable (no SIGBUS), and a data dir
// file that holds data is kept.
func TestResultFallsBackToDisk(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	small := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", small).Run() })
	old := shmDir
	shmDir = small
	t.Cleanup(func() { shmDir = old })
	dataDir := t.TempDir()
	r, err := OpenResult(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.floats(1 << 20) // 4 MiB
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 1
	}
	if r.path != filepath.Join(dataDir, resultFile) {
		t.Fatalf("result buffer at %s, want the data dir's file", r.path)
	}
	if ents, _ := os.ReadDir(small); len(ents) != 0 {
		t.Fatalf("the full tmpfs keeps %d files", len(ents))
	}
	r.Close()
	again, err := OpenResult(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.path != r.path || again.len() != len(b) {
		t.Fatalf("reopened at %s with %d elements, want %s with %d", again.path, again.len(), r.path, len(b))
	}
}
