//go:build !linux

package checkpoint

import (
	"os"
	"path/filepath"
)

// lockDir opens dir/LOCK; advisory locking is implemented on Linux only.
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o644)
}
