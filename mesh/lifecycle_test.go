package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// TestLeaveAndRestart: a graceful leave shows `left`; a crashed node
// restarted with the same DataDir keeps its peer ID and comes back alive with
// a higher incarnation, refuting its death.
func TestLeaveAndRestart(t *testing.T) {
	a := startNode(t, localConfig(t.TempDir()), nil)
	join := func(dir string) Config {
		c := localConfig(dir)
		c.Join = []string{a.joinAddr()}
		return c
	}
	b := startNode(t, join(t.TempDir()), nil)
	cDir := t.TempDir()
	c := startNode(t, join(cDir), nil)
	for _, n := range []*testNode{a, b, c} {
		waitFor(t, "3 alive", func() (bool, string) { return seesAlive(n, a, b, c) })
	}

	b.stop(t)
	for _, n := range []*testNode{a, c} {
		waitFor(t, "b left", func() (bool, string) {
			st, _ := stateOf(n, b.Self())
			return st == Left, "b is " + st.String()
		})
	}

	oldID, oldInc := c.Self(), c.Incarnation()
	c.crash(t)
	waitFor(t, "c dead", func() (bool, string) {
		st, _ := stateOf(a, oldID)
		return st == Dead, "c is " + st.String()
	})
	c2 := startNode(t, join(cDir), nil)
	if c2.Self() != oldID {
		t.Fatalf("restarted peer ID %s, want %s", c2.Self(), oldID)
	}
	if c2.Incarnation() <= oldInc {
		t.Fatalf("restarted incarnation %d, want > %d", c2.Incarnation(), oldInc)
	}
	waitFor(t, "c alive again", func() (bool, string) {
		st, inc := stateOf(a, oldID)
		return st == Alive && inc >= c2.Incarnation(), "c is " + st.String()
	})
	waitFor(t, "c sees a", func() (bool, string) { return seesAlive(c2, a, c2) })
}

// TestRefuteDeathNotice: a dead notice about a live node at its current
// incarnation makes it bump its incarnation (in memory and on disk) and come
// back alive everywhere.
func TestRefuteDeathNotice(t *testing.T) {
	a := startNode(t, localConfig(t.TempDir()), nil)
	cfg := localConfig(t.TempDir())
	cfg.Join = []string{a.joinAddr()}
	b := startNode(t, cfg, nil)
	cfg = localConfig(t.TempDir())
	cfg.Join = []string{a.joinAddr()}
	c := startNode(t, cfg, nil)
	for _, n := range []*testNode{a, b, c} {
		waitFor(t, "3 alive", func() (bool, string) { return seesAlive(n, a, b, c) })
	}
	inc := b.Incarnation()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	a.publishFailure(ctx, &failureNotice{Mesh: a.cfg.Mesh, Sender: a.Self(), Kind: Dead, Subject: b.Self(), Incarnation: inc})
	waitFor(t, "b refutes", func() (bool, string) { return b.Incarnation() > inc, "" })
	waitFor(t, "c sees b alive, newer", func() (bool, string) {
		st, got := stateOf(c, b.Self())
		return st == Alive && got > inc, "b is " + st.String()
	})
	onDisk, err := readIncarnation(b.dir)
	if err != nil || onDisk != b.Incarnation() {
		t.Errorf("incarnation on disk %d (%v), want %d", onDisk, err, b.Incarnation())
	}
}

func TestRunTwiceAndAfterClose(t *testing.T) {
	a := startNode(t, localConfig(t.TempDir()), nil)
	waitFor(t, "running", func() (bool, string) { return a.running.Load(), "" })
	if err := a.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: got %v, want ErrRunning", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	m, err := Open(ctx, localConfig(t.TempDir()), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: got %v, want ErrClosed", err)
	}
	if _, ok := <-m.Watch(ctx); ok {
		t.Error("Watch after Close delivered a view, want a closed channel")
	}
}

// TestSuspectFastPath: Suspect on a live member probes it at once; the probe
// reaches it, so nothing is gossiped: it stays alive everywhere, at the same
// incarnation.
func TestSuspectFastPath(t *testing.T) {
	metrics := newCountingMetrics()
	a := startNode(t, localConfig(t.TempDir()), metrics)
	cfg := localConfig(t.TempDir())
	cfg.Join = []string{a.joinAddr()}
	b := startNode(t, cfg, nil)
	for _, n := range []*testNode{a, b} {
		waitFor(t, "2 alive", func() (bool, string) { return seesAlive(n, a, b) })
	}
	inc := b.Incarnation()
	a.Suspect(b.Self(), errors.New("stream reset"))
	waitFor(t, "a probes b", func() (bool, string) { return metrics.probed(true) > 0, "" })
	if st, got := stateOf(a, b.Self()); st != Alive || got != inc || b.Incarnation() != inc {
		t.Errorf("after a reached b: a sees b %v at %d, b at %d; want alive at %d", st, got, b.Incarnation(), inc)
	}
	if n := metrics.transitions(Suspect) + metrics.transitions(Dead); n != 0 {
		t.Errorf("a made %d transitions to suspect or dead, want 0", n)
	}
}

// TestJoinRetriesUntilUp: a node whose join address is not up yet keeps
// dialling with backoff and joins once it is.
func TestJoinRetriesUntilUp(t *testing.T) {
	aDir, aID := newIdentity(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	addr := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)
	// Until a starts, the port refuses every handshake: accept and close.
	dialled := make(chan struct{}, 1)
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
			select {
			case dialled <- struct{}{}:
			default:
			}
		}
	}()

	cfg := localConfig(t.TempDir())
	cfg.Join = []string{addr + "/p2p/" + aID.String()}
	b := startNode(t, cfg, nil)
	select {
	case <-dialled:
	case <-time.After(testTimeout):
		t.Fatal("b never dialled its join address")
	}
	l.Close() // free the port for a
	<-accepted
	aCfg := localConfig(aDir)
	aCfg.Listen = []string{addr}
	a := startNode(t, aCfg, nil)
	for _, n := range []*testNode{a, b} {
		waitFor(t, "a and b alive", func() (bool, string) { return seesAlive(n, a, b) })
	}
}
