//go:build !linux

package checkpoint

import (
	"math"
	"os"
)

// preallocate sizes f as a sparse file.
func preallocate(f *os.File, size int64) error { return f.Truncate(size) }

// freeSpace is not measured here: nothing is preallocated (files are
// sparse), so a full disk shows as ENOSPC when chunks are written.
func freeSpace(string) (int64, error) { return math.MaxInt64, nil }

// startWriteback is a no-op here; the final fsync does all the writing.
func startWriteback(*os.File, int64, int) {}
