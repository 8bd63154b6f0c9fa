package node

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestLockDataDir: the data dir lock is exclusive, names the holder's PID,
// and is free again once released.
func TestLockDataDir(t *testing.T) {
	dir := t.TempDir()
	l, err := LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockDataDir(dir)
	if !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second lock: %v; want ErrDataDirInUse naming pid %d", err, os.Getpid())
	}
	cfg := LocalConfig()
	cfg.DataDir = t.TempDir()
	cfg.Lock = l
	if err := cfg.Validate(); err == nil {
		t.Fatal("a config whose lock is on another data dir validates")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := LockDataDir(dir)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	l2.Close()
}
