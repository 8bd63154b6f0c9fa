package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LockFile is the file in the data dir that a running node holds an
// exclusive lock on (flock, where the system has it), with its PID inside.
const LockFile = "node.lock"

// ErrDataDirInUse says another node runs on the data dir.
var ErrDataDirInUse = errors.New("a node already runs on this data dir")

// DataDirLock is a node's exclusive hold on its data dir: two nodes on one
// data dir would share an identity, an incarnation and the round state.
type DataDirLock struct {
	dir string
	f   *os.File
}

// LockDataDir takes the data dir lock, before anything else in the data dir
// is read or written (identity, incarnation, secret, checkpoints). The data
// dir must exist. When another process holds it, the error wraps
// ErrDataDirInUse and names that process's PID when it is known.
func LockDataDir(dir string) (*DataDirLock, error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: lock data dir: %w", err)
	}
	held, err := flock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("node: lock data dir: %w", err)
	}
	if held {
		b, _ := os.ReadFile(path)
		f.Close()
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			return nil, fmt.Errorf("%w (%s, pid %d): stop it first, or give this node another --data-dir", ErrDataDirInUse, dir, pid)
		}
		return nil, fmt.Errorf("%w (%s): stop it first, or give this node another --data-dir", ErrDataDirInUse, dir)
	}
	// The PID is for the message above only; the lock is what counts.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &DataDirLock{dir: dir, f: f}, nil
}

// Close releases the lock. Idempotent; nil-safe.
func (l *DataDirLock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// holds reports whether l is a lock on dir.
func (l *DataDirLock) holds(dir string) bool {
	if l == nil || l.f == nil {
		return false
	}
	a, err1 := filepath.Abs(l.dir)
	b, err2 := filepath.Abs(dir)
	return err1 == nil && err2 == nil && a == b
}
