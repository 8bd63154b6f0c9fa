package netlab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// Command returns a command that runs name with args inside host i (through
// ip netns exec). The lab kills it, and anything else left in its
// namespaces, at cleanup; ctx kills it earlier as with exec.CommandContext.
func (l *Lab) Command(ctx context.Context, i int, name string, args ...string) *exec.Cmd {
	l.t.Helper()
	l.checkIndex(i)
	full := append([]string{"netns", "exec", l.hosts[i].Netns, name}, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	l.mu.Lock()
	l.cmds = append(l.cmds, cmd)
	l.mu.Unlock()
	return cmd
}

// Run calls fn on an OS thread moved into host i's network namespace and
// returns its error. Sockets fn creates (listeners, dialled connections,
// UDP sockets) belong to that namespace for good and may be used from any
// goroutine afterwards; goroutines fn starts do NOT run in the namespace.
// So a libp2p host or mDNS service, which open sockets from their own
// goroutines, belongs in a process started with Command, not in Run.
// Safe for concurrent use.
func (l *Lab) Run(i int, fn func() error) error {
	l.t.Helper()
	l.checkIndex(i)
	return runInNetns(l.hosts[i].Netns, fn)
}

func runInNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked if it could not be moved back: the
		// runtime then ends it with this goroutine rather than reuse it.
		runtime.LockOSThread()
		errc <- onThreadInNetns(name, fn)
	}()
	return <-errc
}

// onThreadInNetns must run on a locked thread; it unlocks it only when the
// thread is back in its own namespace.
func onThreadInNetns(name string, fn func() error) error {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return fmt.Errorf("netlab: open own netns: %w", err)
	}
	defer orig.Close()
	target, err := os.Open("/var/run/netns/" + name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netlab: open netns %s: %w", name, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netlab: setns %s: %w", name, err)
	}
	fnErr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("netlab: setns back from %s: %w", name, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}
