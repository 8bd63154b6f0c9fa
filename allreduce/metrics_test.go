package allreduce

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type countMetrics struct {
	sent, received atomic.Int64
	mu             sync.Mutex
	rounds         []error
}

func (m *countMetrics) BytesSent(_, n int)     { m.sent.Add(int64(n)) }
func (m *countMetrics) BytesReceived(_, n int) { m.received.Add(int64(n)) }
func (m *countMetrics) RoundDone(_ time.Duration, _, _ int, err error) {
	m.mu.Lock()
	m.rounds = append(m.rounds, err)
	m.mu.Unlock()
}

func TestMetrics(t *testing.T) {
	n, l := 3, 3000
	ids := testIDs(t, n)
	net := NewMemNetwork(testConfig(), 64<<10, nil)
	t.Cleanup(net.Close)
	m := &countMetrics{}
	rs := make([]*Reducer, n)
	for i, id := range ids {
		rs[i] = New(testConfig(), net.Transport(id), nil, m)
	}
	src := testInputs(30, n, l)
	opts := sameOpts(n, Options{Wire: BFloat16, Op: Sum})
	checkOutcomes(t, runRound(testCtx(t), rs, Round{Mesh: "m", Ring: ids}, src, opts), src, opts)
	// Every member sends 2(n-1) of the n segments, 2 bytes per element.
	want := int64(n * 2 * (n - 1) * (l / n) * 2)
	if got := m.sent.Load(); got != want {
		t.Fatalf("got %d bytes sent, want %d", got, want)
	}
	if got := m.received.Load(); got != want {
		t.Fatalf("got %d bytes received, want %d", got, want)
	}
	if len(m.rounds) != n {
		t.Fatalf("got %d rounds recorded, want %d", len(m.rounds), n)
	}
	for i, err := range m.rounds {
		if err != nil {
			t.Fatalf("round %d recorded error %v, want nil", i, err)
		}
	}
}
