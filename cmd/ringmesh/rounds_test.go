package main

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/systest"
)

func TestRoundsSmoke(t *testing.T) {
	root := t.TempDir()
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, root)
		}
	})
	ps := systest.Cluster(t, root, 3, "--min-members", "3")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	got := map[string][]systest.Applied{}
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &systest.Synthetic{Dir: p.Dir, Size: 1000, Steps: 20, Record: func(a systest.Applied) {
				mu.Lock()
				got[p.ID] = append(got[p.ID], a)
				mu.Unlock()
			}}
			if err := tr.Run(ctx); err != nil {
				t.Errorf("trainer %s: %v", filepath.Base(p.Dir), err)
			}
		}()
	}
	wg.Wait()
	for id, as := range got {
		t.Logf("%s: %d rounds", id[len(id)-6:], len(as))
	}
}

func dumpLogs(t *testing.T, root string) {
	logs, _ := filepath.Glob(filepath.Join(root, "*", "node-*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		t.Logf("=== %s\n%s", l, b)
	}
}
