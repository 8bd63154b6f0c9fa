package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// testTimeout bounds every wait: generous, for a loaded 2-core machine
// under -race.
const testTimeout = 45 * time.Second

// testNode is a Mesh whose Run goroutine the test owns.
type testNode struct {
	*Mesh
	dir    string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("MESH_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// localConfig is LocalConfig with DataDir set.
func localConfig(dir string) Config {
	c := LocalConfig()
	c.DataDir = dir
	return c
}

// startNode opens a mesh and runs it until the test ends (or stop/crash).
func startNode(t testing.TB, cfg Config, metrics Metrics) *testNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	m, err := Open(ctx, cfg, testLogger(t), metrics)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return runNode(t, m, cfg.DataDir)
}

func runNode(t testing.TB, m *Mesh, dir string) *testNode {
	rctx, rcancel := context.WithCancel(context.Background())
	n := &testNode{Mesh: m, dir: dir, cancel: rcancel, done: make(chan error, 1)}
	go func() { n.done <- m.Run(rctx) }()
	t.Cleanup(func() { n.stop(t) })
	return n
}

// stop leaves gracefully: cancel Run, wait for it, then Close.
func (n *testNode) stop(t testing.TB) {
	n.once.Do(func() {
		n.cancel()
		n.wait(t)
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// crash closes the host first, with no leave notice, then lets Run end.
func (n *testNode) crash(t testing.TB) {
	n.once.Do(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		n.cancel()
		n.wait(t)
	})
}

func (n *testNode) wait(t testing.TB) {
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(testTimeout):
		t.Errorf("Run did not return within %v", testTimeout)
	}
}

// joinAddr returns a /p2p address of n for Config.Join.
func (n *testNode) joinAddr() string {
	return fmt.Sprintf("%s/p2p/%s", n.Host().Addrs()[0], n.Self())
}

// waitFor polls cond until it holds or testTimeout passes.
func waitFor(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	var last string
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; last: %s", what, last)
}

// stateOf returns p's state in n's view, 0 if absent.
func stateOf(n *testNode, p peer.ID) (State, uint64) {
	m, ok := n.View().Member(p)
	if !ok {
		return 0, 0
	}
	return m.State, m.Incarnation
}

// seesAlive reports whether n sees exactly want as its alive members.
func seesAlive(n *testNode, want ...*testNode) (bool, string) {
	got := n.View().Alive()
	ids := make(map[peer.ID]bool, len(want))
	for _, w := range want {
		ids[w.Self()] = true
	}
	ok := len(got) == len(want)
	for _, id := range got {
		ok = ok && ids[id]
	}
	return ok, fmt.Sprintf("%s sees alive %s, want %d", short(n.Self()), shortAll(got), len(want))
}

func short(p peer.ID) string {
	s := p.String()
	return s[max(0, len(s)-6):]
}

func shortAll(ps []peer.ID) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(short(p) + " ")
	}
	return b.String()
}

// countingMetrics records metric calls.
type countingMetrics struct {
	mu      sync.Mutex
	invalid map[string]int
	to      map[State]int // transitions by target state
	probes  map[bool]int  // direct probes by outcome
}

func newCountingMetrics() *countingMetrics {
	return &countingMetrics{invalid: make(map[string]int), to: make(map[State]int), probes: make(map[bool]int)}
}

func (c *countingMetrics) InvalidMessage(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.invalid[reason]++
}

func (c *countingMetrics) count(reason string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.invalid[reason]
}

func (c *countingMetrics) Transition(_, to State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.to[to]++
}

// transitions counts the transitions of any member into state to.
func (c *countingMetrics) transitions(to State) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.to[to]
}

func (c *countingMetrics) Probe(ok bool, _ time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.probes[ok]++
}

// probed counts the direct probes with outcome ok.
func (c *countingMetrics) probed(ok bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.probes[ok]
}

// startMesh starts n nodes joined through the first, each with its own
// counting metrics and with mod (if not nil) applied to its config, and
// waits until every node sees all n alive.
func startMesh(t *testing.T, n int, mod func(i int, c *Config)) ([]*testNode, []*countingMetrics) {
	t.Helper()
	var nodes []*testNode
	var metrics []*countingMetrics
	for i := range n {
		cfg := localConfig(t.TempDir())
		if i > 0 {
			cfg.Join = []string{nodes[0].joinAddr()}
		}
		if mod != nil {
			mod(i, &cfg)
		}
		metrics = append(metrics, newCountingMetrics())
		nodes = append(nodes, startNode(t, cfg, metrics[i]))
	}
	for _, x := range nodes {
		waitFor(t, fmt.Sprintf("%d alive", n), func() (bool, string) { return seesAlive(x, nodes...) })
	}
	return nodes, metrics
}
