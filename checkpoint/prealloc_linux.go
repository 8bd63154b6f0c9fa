package checkpoint

import (
	"errors"
	"os"
	"syscall"
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
