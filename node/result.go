package node

import (
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resultFile backs the all-reduce result buffer with a shared mapping of a
// file in the data dir, so that a result this node reported ready survives
// the process (SIGKILL, a crash): the page cache keeps it, and a restarted
// node can still apply the step once it is decided (rounds.Durable.Result).
// It is not fsynced: after a reboot it is not trusted (savedState.Boot).
const resultFile = "result.f32"

type resultBuf struct {
	path string
	f    *os.File
	mem  []byte
}

func openResult(dataDir string) (*resultBuf, error) {
	path := filepath.Join(dataDir, resultFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: result buffer: %w", err)
	}
	r := &resultBuf{path: path, f: f}
	if st, err := f.Stat(); err == nil && st.Size() > 0 && st.Size()%4 == 0 {
		if err := r.mapLen(int(st.Size() / 4)); err != nil {
			f.Close()
			return nil, err
		}
	}
	return r, nil
}

// floats returns the buffer as n float32s, resizing it when n changed.
// Resizing keeps no content.
func (r *resultBuf) floats(n int) ([]float32, error) {
	if len(r.mem) != 4*n {
		if err := r.mapLen(n); err != nil {
			return nil, err
		}
	}
	if n == 0 {
		return []float32{}, nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&r.mem[0])), n), nil
}

// len returns the buffer's length in elements.
func (r *resultBuf) len() int { return len(r.mem) / 4 }

func (r *resultBuf) mapLen(n int) error {
	if r.mem != nil {
		if err := unix.Munmap(r.mem); err != nil {
			return fmt.Errorf("node: result buffer: %w", err)
		}
		r.mem = nil
	}
	if err := r.f.Truncate(int64(4 * n)); err != nil {
		return fmt.Errorf("node: result buffer: %w", err)
	}
	if n == 0 {
		return nil
	}
	mem, err := unix.Mmap(int(r.f.Fd()), 0, 4*n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("node: result buffer: map %d bytes: %w", 4*n, err)
	}
	r.mem = mem
	return nil
}

func (r *resultBuf) close() {
	if r.mem != nil {
		unix.Munmap(r.mem)
		r.mem = nil
	}
	r.f.Close()
}
