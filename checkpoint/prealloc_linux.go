package checkpoint

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// preallocate reserves size bytes for f so that a full disk is reported
// before a transfer starts, falling back to a sparse file where the file
// system cannot allocate.
func preallocate(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
		return f.Truncate(size)
	}
	return err
}

// startWriteback asks the kernel to start writing [off, off+n) of f to disk
// now (without waiting), so that dirty pages do not pile up during a fetch
// and the final fsync before the entry is promoted finds little left to do.
func startWriteback(f *os.File, off int64, n int) {
	_ = unix.SyncFileRange(int(f.Fd()), off, int64(n), unix.SYNC_FILE_RANGE_WRITE)
}
