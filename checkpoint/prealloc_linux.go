package checkpoint

import (
	"errors"
	"math"
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

// freeSpace returns the bytes that an unprivileged writer may still
// allocate on the file system holding dir (statfs f_bavail).
func freeSpace(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	unit := int64(st.Frsize)
	if unit <= 0 {
		unit = int64(st.Bsize)
	}
	if unit <= 0 {
		return 0, errors.New("statfs reports no block size")
	}
	if st.Bavail > uint64(math.MaxInt64/unit) {
		return math.MaxInt64, nil
	}
	return int64(st.Bavail) * unit, nil
}

// startWriteback asks the kernel to start writing [off, off+n) of f to disk
// now (without waiting), so that dirty pages do not pile up during a fetch
// and the final fsync before the entry is promoted finds little left to do.
func startWriteback(f *os.File, off int64, n int) {
	_ = unix.SyncFileRange(int(f.Fd()), off, int64(n), unix.SYNC_FILE_RANGE_WRITE)
}
