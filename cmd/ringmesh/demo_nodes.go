package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// demoProc is one `ringmesh node` process the demo started.
type demoProc struct {
	dir  string
	id   string // peer ID
	addr string // an address to --join through
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// demoNodeArgs are the flags of every demo node: loopback only, no mDNS or
// DHT, fast failure detection.
var demoNodeArgs = []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht", "--fast-detect", "--log-level", "info"}

// startDemoNode starts `bin node --data-dir dir` with demoNodeArgs and args
// and waits until its control socket answers with an address. The node
// gets SIGKILL if the demo's process dies without stopping it.
func startDemoNode(ctx context.Context, bin, dir string, args ...string) (*demoProc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	full := append([]string{"node", "--data-dir", dir}, demoNodeArgs...)
	full = append(full, args...)
	logPath := filepath.Join(dir, fmt.Sprintf("node-%s.log", time.Now().Format("150405.000")))
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, full...)
	cmd.Env = demoNodeEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C reaches the demo, which stops it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &demoProc{dir: dir, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	if err := p.waitReady(ctx, 30*time.Second); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// demoNodeEnv is the demo's environment without RINGMESH_* variables, which
// would otherwise set flags of the local demo nodes (a data dir, a PSK, a
// join address meant for the user's own node).
func demoNodeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RINGMESH_") {
			env = append(env, kv)
		}
	}
	return env
}

func (p *demoProc) waitReady(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		st, err := fetchStatus(p.dir)
		if err == nil && len(st.Self.Addrs) > 0 {
			p.id, p.addr = st.Self.ID, st.Self.Addrs[0]
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("node %s exited at start (%v); log %s", p.dir, p.err, p.log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: no answer on its control socket within %s: %v", p.dir, d, err)
		}
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *demoProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM, waits up to d, then SIGKILL.
func (p *demoProc) stop(d time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		var ee *exec.ExitError
		if errors.As(p.err, &ee) {
			return fmt.Errorf("node %s: %v", p.dir, p.err)
		}
		return nil
	case <-time.After(d):
		p.kill()
		return fmt.Errorf("node %s did not stop within %s of SIGTERM; killed", p.dir, d)
	}
}
