// Package nodeproc starts and stops `ringmesh node` processes: the local
// clusters of ringmesh bench and the system tests. A node is started with
// its own data dir, found through its control socket, and stopped by PID
// (SIGTERM, or SIGKILL to crash it).
package nodeproc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/credentials"
	"github.com/ringmesh/ringmesh/node/localapi"
)

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

// StartCmd starts `prefix... bin node --data-dir dir args...` (no LocalArgs;
// prefix runs it elsewhere, e.g. `ip netns exec NS`) and waits until its
// control socket answers.
//
// Unless args bring their own credentials (--psk, --insecure-open-mesh or
// a join token), the node gets --psk with the mesh secret of dir's parent
// directory (created there once): nodes whose data dirs are siblings form
// one private mesh, as hosts given one token do.
func StartCmd(prefix []string, bin, dir string, args ...string) (*Proc, error) {
	return startCmd(prefix, bin, dir, !hasCredentials(args), false, args...)
}

// StartOwn is StartCmd without the shared secret: the node's credentials
// are its own (a fresh data dir creates a secret of its own), as for a
// user's first command.
func StartOwn(prefix []string, bin, dir string, args ...string) (*Proc, error) {
	return startCmd(prefix, bin, dir, false, false, args...)
}

// StartTied is StartOwn for a launcher whose nodes must not outlive it
// (ringmesh demo): the node gets SIGKILL when the thread that started it
// dies, so a killed demo leaves no node behind. Call it from an ordinary
// goroutine, never from one locked to an OS thread that may exit.
func StartTied(bin, dir string, args ...string) (*Proc, error) {
	return startCmd(nil, bin, dir, false, true, args...)
}

func startCmd(prefix []string, bin, dir string, share, tied bool, args ...string) (*Proc, error) {
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
	cmd.Env = nodeEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C reaches the launcher, which stops it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if tied {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
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

// nodeEnv is the environment without RINGMESH_* variables, which would
// otherwise set flags of the launched nodes (a data dir, a secret, a join
// address meant for the user's own node): the launcher's args say it all.
func nodeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RINGMESH_") {
			env = append(env, kv)
		}
	}
	return env
}

// Status asks the node of dir for its status.
func Status(dir string) (localapi.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return client.ReadStatus(ctx, dir)
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
