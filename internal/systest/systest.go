// Package systest runs real `ringmesh` processes for system tests: it builds
// the binary once (or takes RINGMESH_BIN), starts nodes on 127.0.0.1 with
// their own data dirs, finds their addresses through the control socket, and
// stops them by PID (SIGTERM, or SIGKILL to crash them).
package systest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/nodeproc"
	"github.com/ringmesh/ringmesh/node/localapi"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary returns the path of the ringmesh binary: $RINGMESH_BIN, or one
// built once per test process.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("RINGMESH_BIN"); p != "" {
			binPath = p
			return
		}
		dir, err := os.MkdirTemp("", "ringmesh-bin-")
		if err != nil {
			buildErr = err
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		binPath = filepath.Join(dir, "ringmesh")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/ringmesh")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("systest: %v", buildErr)
	}
	return binPath
}

// Proc is one ringmesh node process (see nodeproc).
type Proc = nodeproc.Proc

// LocalArgs are the flags every test node gets: loopback only, no mDNS or
// DHT, fast failure detection.
var LocalArgs = []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht", "--fast-detect", "--log-level", "debug"}

// Start starts `ringmesh node --data-dir dir` with LocalArgs and args, and
// waits until its control socket answers. The process is stopped when the
// test ends.
func Start(t testing.TB, dir string, args ...string) *Proc {
	t.Helper()
	p, err := StartNode(Binary(t), dir, args...)
	if err != nil {
		t.Fatalf("systest: %v", err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	return p
}

// StartNode starts a node process without a testing.TB (for benchmarks and
// the demo).
func StartNode(bin, dir string, args ...string) (*Proc, error) {
	return StartCmd(nil, bin, dir, append(append([]string{}, LocalArgs...), args...)...)
}

// StartCmd is nodeproc.StartCmd: nodes whose data dirs are siblings share
// one mesh secret unless args bring credentials.
func StartCmd(prefix []string, bin, dir string, args ...string) (*Proc, error) {
	return nodeproc.StartCmd(prefix, bin, dir, args...)
}

// StartOwn is nodeproc.StartOwn: the node's credentials are its own.
func StartOwn(prefix []string, bin, dir string, args ...string) (*Proc, error) {
	return nodeproc.StartOwn(prefix, bin, dir, args...)
}

// Status asks the node of dir for its status.
func Status(dir string) (localapi.Status, error) { return nodeproc.Status(dir) }

// Cluster starts n nodes in dirs root/0..n-1; every node after the first is
// given only --join to the first.
func Cluster(t testing.TB, root string, n int, args ...string) []*Proc {
	t.Helper()
	ps := make([]*Proc, n)
	ps[0] = Start(t, filepath.Join(root, "0"), args...)
	for i := 1; i < n; i++ {
		ps[i] = Start(t, filepath.Join(root, fmt.Sprint(i)), append([]string{"--join", ps[0].Addr}, args...)...)
	}
	return ps
}

// Eventually polls cond until it returns nil or d passes; then it fails the
// test with the last error.
func Eventually(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
