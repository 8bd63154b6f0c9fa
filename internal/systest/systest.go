// Package systest runs real `ringmesh` processes for system tests: it builds
// the binary once (or takes RINGMESH_BIN), starts nodes on 127.0.0.1 with
// their own data dirs, finds their addresses through the control socket, and
// stops them by PID (SIGTERM, or SIGKILL to crash them).
package systest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/node"
	"github.com/ringmesh/ringmesh/node/credentials"
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

// Proc is one ringmesh node process.
type Proc struct {
	Dir  string // data dir
	Args []string
	Cmd  *exec.Cmd
	ID   string // peer ID
	Addr string // a /ip4/127.0.0.1/tcp/N/p2p/ID address to join through
	Log  string // path of its stderr log
	done chan struct{}
	err  error
}

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

// StartCmd starts `prefix... bin node --data-dir dir args...` (no LocalArgs;
// prefix runs it elsewhere, e.g. `ip netns exec NS`) and waits until its
// control socket answers.
//
// Unless args bring their own credentials (--psk, --insecure-open-mesh or
// a join token), the node gets --psk with the mesh secret of dir's parent
// directory (created there once): nodes whose data dirs are siblings form
// one private mesh, as hosts given one token do.
func StartCmd(prefix []string, bin, dir string, args ...string) (*Proc, error) {
	return startCmd(prefix, bin, dir, !hasCredentials(args), args...)
}

// StartOwn is StartCmd without the shared secret: the node's credentials
// are its own (a fresh data dir creates a secret of its own), as for a
// user's first command.
func StartOwn(prefix []string, bin, dir string, args ...string) (*Proc, error) {
	return startCmd(prefix, bin, dir, false, args...)
}

func startCmd(prefix []string, bin, dir string, share bool, args ...string) (*Proc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if share {
		psk, _, err := credentials.Ensure(filepath.Dir(dir), nil)
		if err != nil {
			return nil, err
		}
		args = append(append([]string{}, args...), "--psk", psk)
	}
	full := append([]string{"node", "--data-dir", dir}, args...)
	if len(prefix) > 0 {
		full = append(append(prefix[1:], bin), full...)
		bin = prefix[0]
	}
	logPath := filepath.Join(dir, fmt.Sprintf("node-%d.log", time.Now().UnixNano()))
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, full...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &Proc{Dir: dir, Args: args, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := Status(dir)
		if err == nil && len(st.Self.Addrs) > 0 {
			p.ID, p.Addr = st.Self.ID, st.Self.Addrs[0]
			return p, nil
		}
		select {
		case <-p.done:
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("node %s exited at start: %v\n%s", dir, p.err, b)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Kill()
			return nil, fmt.Errorf("node %s: control socket did not answer in 30s: %v", dir, err)
		}
	}
}

// Status asks the node of dir for its status.
func Status(dir string) (node.StatusJSON, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return node.ReadStatus(ctx, dir)
}

// Kill crashes the process with SIGKILL and waits for it to be gone.
func (p *Proc) Kill() {
	if p.Cmd.Process != nil {
		p.Cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// Stop sends SIGTERM and waits up to d, then SIGKILL. It returns the exit
// error (nil for exit status 0).
func (p *Proc) Stop(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		p.Kill()
		return fmt.Errorf("node %s did not stop within %s after SIGTERM", p.Dir, d)
	}
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

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

// hasCredentials reports whether node args choose how the mesh is kept
// private (or open).
func hasCredentials(args []string) bool {
	for _, a := range args {
		if a == "--psk" || strings.HasPrefix(a, "--psk=") || a == "--insecure-open-mesh" || credentials.IsToken(a) {
			return true
		}
	}
	return false
}
