package checkpoint

import (
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Process-wide libp2p/go-log background goroutines that outlive hosts.
		goleak.IgnoreTopFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// testTimeout bounds every wait in the tests: generous for a loaded 2-core
// machine, but nothing can hang.
const testTimeout = 60 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or the test deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatalf("libp2p.New: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// link makes every host know every other's addresses.
func link(hs ...host.Host) {
	for _, a := range hs {
		for _, b := range hs {
			if a != b {
				a.Peerstore().AddAddrs(b.ID(), b.Addrs(), time.Hour)
			}
		}
	}
}

// writeRandom writes n seeded random bytes to a new file and returns its
// path and SHA-256.
func writeRandom(t testing.TB, n int, seed uint64) (string, Hash) {
	t.Helper()
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	p := filepath.Join(t.TempDir(), "ckpt.bin")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, sha256.Sum256(b)
}

func fileHash(t testing.TB, p string) Hash {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return Hash(h.Sum(nil))
}

func openStore(t testing.TB, dir string, cfg StoreConfig) *Store {
	t.Helper()
	s, err := OpenStore(dir, cfg, nil)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// countMetrics counts what the tests assert on. hold, when set, is called
// before a chunk is served (to order events deterministically).
type countMetrics struct {
	NopMetrics
	served   atomic.Int64
	fetched  atomic.Int64
	replicas atomic.Int64
	hold     func()

	mu       sync.Mutex
	bad      map[peer.ID]int
	rejected map[string]int
	refused  map[string]int
}

func newCountMetrics() *countMetrics {
	return &countMetrics{bad: make(map[peer.ID]int), rejected: make(map[string]int), refused: make(map[string]int)}
}

func (m *countMetrics) ChunkServed(int) {
	if m.hold != nil {
		m.hold()
	}
	m.served.Add(1)
}
func (m *countMetrics) ChunkFetched(peer.ID, int) { m.fetched.Add(1) }
func (m *countMetrics) ReplicationStarted()       { m.replicas.Add(1) }
func (m *countMetrics) BadChunk(p peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bad[p]++
}
func (m *countMetrics) AnnouncementRejected(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rejected[reason]++
}
func (m *countMetrics) CheckpointRefused(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refused[reason]++
}
func (m *countMetrics) refusedCount(reason string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.refused[reason]
}
func (m *countMetrics) rejectedCount(reason string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rejected[reason]
}

// memBus is an in-memory gossip topic: every Publish reaches every
// subscriber (the publisher included, as gossipsub does), with the
// publisher as author.
type memBus struct {
	mu   sync.Mutex
	subs []*memAnnouncer
}

type memMsg struct {
	data []byte
	from peer.ID
}

type memAnnouncer struct {
	bus  *memBus
	self peer.ID
	ch   chan memMsg
}

func (b *memBus) join(self peer.ID) *memAnnouncer {
	a := &memAnnouncer{bus: b, self: self, ch: make(chan memMsg, 1024)}
	b.mu.Lock()
	b.subs = append(b.subs, a)
	b.mu.Unlock()
	return a
}

// publishAs delivers data with an arbitrary author (a test of the
// author check; real gossipsub signs the author).
func (b *memBus) publishAs(from peer.ID, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.subs {
		select {
		case s.ch <- memMsg{append([]byte(nil), data...), from}:
		default: // a slow subscriber drops, like gossip
		}
	}
}

func (a *memAnnouncer) Publish(ctx context.Context, data []byte) error {
	a.bus.publishAs(a.self, data)
	return ctx.Err()
}

func (a *memAnnouncer) Next(ctx context.Context) ([]byte, peer.ID, error) {
	select {
	case m := <-a.ch:
		return m.data, m.from, nil
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
}

var _ Announcer = (*memAnnouncer)(nil)

// runBG runs fn until the test ends, then cancels it and waits for it.
func runBG(t testing.TB, fn func(ctx context.Context) error) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func sha256Sum(b []byte) Hash { return sha256.Sum256(b) }

type osFile = os.File

var errNoSpace = &os.PathError{Op: "write", Path: "data", Err: syscall.ENOSPC}

func slicesEqual[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
