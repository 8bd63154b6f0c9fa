package systest

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/credentials"
)

// Member opens a mesh member in the test process: it holds the mesh secret
// of root (the one Cluster's nodes share), joins through join, and runs
// with --fast-detect's timings until stop or the end of the test. Hostile
// tests make it lie; the nodes it lies to are real processes.
func Member(t testing.TB, ctx context.Context, root, meshName, join string) (m *mesh.Mesh, cfg mesh.Config, stop func()) {
	t.Helper()
	psk, _, err := credentials.Ensure(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg = mesh.LocalConfig()
	cfg.DataDir, cfg.PSKFile, cfg.Join = filepath.Join(root, "member-in-test"), psk, []string{join}
	if meshName != "" {
		cfg.Mesh = meshName
	}
	cfg.HeartbeatInterval, cfg.SuspectTimeout, cfg.ProbeTimeout, cfg.DeadTimeout = 200*time.Millisecond, 600*time.Millisecond, 400*time.Millisecond, time.Second
	m, err = mesh.Open(ctx, cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(rctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
			m.Close()
		})
	}
	t.Cleanup(stop)
	return m, cfg, stop
}
