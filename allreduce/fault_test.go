package allreduce

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// faultConfig waits long for abort notices so every member can name the
// member where the failure began.
func faultConfig() Config {
	c := testConfig()
	c.NoticeGrace = 2 * time.Second
	return c
}

// afterBytes returns a hook that runs fire once `from` has written more
// than limit bytes.
func afterBytes(from peer.ID, limit int64, fire func()) MemHooks {
	var written atomic.Int64
	var once sync.Once
	return MemHooks{BeforeWrite: func(f, _ peer.ID, b []byte) bool {
		if f == from && written.Add(int64(len(b))) > limit {
			once.Do(fire)
		}
		return false
	}}
}

// requirePeerErrors asserts that every member not in skip failed with a
// *PeerError naming one of want.
func requirePeerErrors(t *testing.T, outs []outcome, ids []peer.ID, skip map[int]bool, want ...peer.ID) {
	t.Helper()
	for i, o := range outs {
		if skip[i] {
			continue
		}
		var pe *PeerError
		if !errors.As(o.err, &pe) {
			t.Fatalf("member %d: got %v, want a *PeerError", i, o.err)
		}
		ok := false
		for _, w := range want {
			ok = ok || pe.Peer == w
		}
		if !ok {
			t.Fatalf("member %d: got error naming %s (%v), want one of %v", i, pe.Peer, pe, want)
		}
		if pe.Peer == ids[i] {
			t.Fatalf("member %d blames itself: %v", i, pe)
		}
	}
}

func TestKillMidRound(t *testing.T) {
	for _, n := range []int{2, 3, 5, 8} {
		t.Run(string(rune('0'+n)), func(t *testing.T) {
			ids := testIDs(t, n)
			net, rs := memRing(t, faultConfig(), ids)
			victim := n / 2
			net.SetHooks(afterBytes(ids[victim], 40<<10, func() { go net.Kill(ids[victim]) }))
			src := testInputs(9, n, 100_000)
			outs := runRound(testCtx(t), rs, Round{Mesh: "m", Step: 3, Ring: ids}, src, sameOpts(n, Options{Wire: Float32, Op: Mean}))
			requireUnchanged(t, src, testInputs(9, n, 100_000)) // the retry needs it
			// Every survivor fails with a *PeerError; the member named is
			// the victim unless a neighbour aborted during the handshake
			// (then best effort, see settle.go).
			requirePeerErrors(t, outs, ids, map[int]bool{victim: true}, ids...)
			named := 0
			for i, o := range outs {
				var pe *PeerError
				if i != victim && errors.As(o.err, &pe) && pe.Peer == ids[victim] {
					named++
				}
			}
			if named == 0 {
				t.Fatalf("no survivor names the victim")
			}
			if outs[victim].err == nil {
				t.Fatalf("victim: got success, want an error")
			}
		})
	}
}

func TestPartitionMidRound(t *testing.T) {
	n := 4
	ids := testIDs(t, n)
	net, rs := memRing(t, faultConfig(), ids)
	net.SetHooks(afterBytes(ids[0], 40<<10, func() { go net.Partition(ids[:2], ids[2:]) }))
	src := testInputs(11, n, 100_000)
	outs := runRound(testCtx(t), rs, Round{Mesh: "m", Ring: ids}, src, sameOpts(n, Options{Wire: BFloat16, Op: Sum}))
	// Each side blames the other side.
	requirePeerErrors(t, outs[:2], ids[:2], nil, ids[2:]...)
	requirePeerErrors(t, outs[2:], ids[2:], nil, ids[:2]...)

	// After healing, the same transports run the retry.
	net.Heal()
	net.SetHooks(MemHooks{})
	opts := sameOpts(n, Options{Wire: BFloat16, Op: Sum})
	outs = runRound(testCtx(t), rs, Round{Mesh: "m", Attempt: 1, Ring: ids}, src, opts)
	checkOutcomes(t, outs, src, opts)
}

func TestDroppedFrameTimesOut(t *testing.T) {
	n := 3
	cfg := faultConfig()
	cfg.FrameTimeout = time.Second
	cfg.NoticeGrace = 500 * time.Millisecond
	ids := testIDs(t, n)
	net, rs := memRing(t, cfg, ids)
	var dropped atomic.Bool
	net.SetHooks(MemHooks{BeforeWrite: func(f, _ peer.ID, b []byte) bool {
		// Drop one whole data payload from member 1.
		return f == ids[1] && len(b) == MinChunkBytes && dropped.CompareAndSwap(false, true)
	}})
	src := testInputs(12, n, 20_000)
	outs := runRound(testCtx(t), rs, Round{Mesh: "m", Ring: ids}, src, sameOpts(n, Options{Wire: Float32, Op: Sum}))
	for i, o := range outs {
		var pe *PeerError
		if !errors.As(o.err, &pe) {
			t.Fatalf("member %d: got %v, want a *PeerError", i, o.err)
		}
	}
}

func TestDelayedWritesSucceed(t *testing.T) {
	n := 4
	ids := testIDs(t, n)
	net, rs := memRing(t, testConfig(), ids)
	var count atomic.Int64
	net.SetHooks(MemHooks{BeforeWrite: func(peer.ID, peer.ID, []byte) bool {
		if count.Add(1)%50 == 0 {
			time.Sleep(time.Millisecond)
		}
		return false
	}})
	src := testInputs(13, n, 30_000)
	opts := sameOpts(n, Options{Wire: Float16, Op: Mean})
	outs := runRound(testCtx(t), rs, Round{Mesh: "m", Ring: ids}, src, opts)
	checkOutcomes(t, outs, src, opts)
}

func TestLateStarterIsHeld(t *testing.T) {
	n := 3
	ids := testIDs(t, n)
	_, rs := memRing(t, testConfig(), ids)
	src := testInputs(14, n, 10_000)
	opts := sameOpts(n, Options{Wire: Float32, Op: Sum})
	round := Round{Mesh: "m", Step: 5, Ring: ids}
	outs := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 2 {
				time.Sleep(300 * time.Millisecond) // the others' streams wait in its inbox
			}
			dst := make([]float32, len(src[i]))
			res, err := rs[i].AllReduce(testCtx(t), ids[i], round, src[i], dst, opts[i])
			outs[i] = outcome{dst, res, err}
		}()
	}
	wg.Wait()
	checkOutcomes(t, outs, src, opts)
}

func TestHeaderMismatchRejected(t *testing.T) {
	n := 3
	ids := testIDs(t, n)
	_, rs := memRing(t, faultConfig(), ids)
	src := testInputs(15, n, 5000)
	opts := sameOpts(n, Options{Wire: Float32, Op: Sum})
	opts[1].Wire = BFloat16
	outs := runRound(testCtx(t), rs, Round{Mesh: "m", Ring: ids}, src, opts)
	for i, o := range outs {
		if o.err == nil {
			t.Fatalf("member %d: got success, want a header mismatch", i)
		}
	}
	// Member 1's receivers see its header and reject it; member 1 hears
	// the rejection: everyone learns that no retry can help.
	for i, o := range outs {
		if !errors.Is(o.err, ErrHeaderMismatch) || !errors.Is(o.err, ErrSettingsMismatch) {
			t.Fatalf("member %d: got %v, want ErrSettingsMismatch and ErrHeaderMismatch", i, o.err)
		}
	}
	// The next round, with agreeing options, succeeds on the same transports.
	opts[1].Wire = Float32
	outs = runRound(testCtx(t), rs, Round{Mesh: "m", Step: 1, Ring: ids}, src, opts)
	checkOutcomes(t, outs, src, opts)
}

// Members that run different lane counts or chunk sizes all fail with
// ErrSettingsMismatch, naming the field, instead of retrying for ever.
func TestConfigMismatchIsSettingsMismatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Config)
	}{
		{"lanes", func(c *Config) { c.Lanes = 1 }},
		{"chunk_bytes", func(c *Config) { c.ChunkBytes = 2 * MinChunkBytes }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 4
			ids := testIDs(t, n)
			net, rs := memRing(t, faultConfig(), ids)
			odd := faultConfig()
			tc.set(&odd)
			rs[2] = New(odd, net.Transport(ids[2]), nil, nil) // same transport, other settings
			src := testInputs(16, n, 5000)
			outs := runRound(testCtx(t), rs, Round{Mesh: "m", Ring: ids}, src, sameOpts(n, Options{Wire: Float32, Op: Sum}))
			for i, o := range outs {
				if !errors.Is(o.err, ErrSettingsMismatch) {
					t.Fatalf("member %d: got %v, want ErrSettingsMismatch", i, o.err)
				}
			}
			found := false
			for _, o := range outs {
				found = found || strings.Contains(o.err.Error(), tc.name+": got")
			}
			if !found {
				t.Errorf("no member's error names the field %q: %v", tc.name, outs[0].err)
			}
		})
	}
}

func TestCancelledCallReturns(t *testing.T) {
	n := 3
	ids := testIDs(t, n)
	_, rs := memRing(t, faultConfig(), ids)
	src := testInputs(16, n, 1000)
	ctx, cancel := contextWithCancel(t)
	cancel()
	// Member 0 alone, cancelled: returns the context's error.
	_, err := rs[0].AllReduce(ctx, ids[0], Round{Mesh: "m", Ring: ids}, src[0], make([]float32, 1000), Options{Wire: Float32, Op: Sum})
	if err == nil {
		t.Fatalf("got success, want a context error")
	}
}

func TestBadCalls(t *testing.T) {
	ids := testIDs(t, 2)
	_, rs := memRing(t, testConfig(), ids)
	ctx := testCtx(t)
	ok := Options{Wire: Float32, Op: Sum}
	cases := []struct {
		name  string
		round Round
		src   []float32
		dst   []float32
		opt   Options
		want  error
	}{
		{"len", Round{Ring: ids}, make([]float32, 2), make([]float32, 3), ok, ErrBadOptions},
		{"self missing", Round{Ring: ids[1:]}, nil, nil, ok, ErrBadRound},
		{"duplicate", Round{Ring: []peer.ID{ids[0], ids[0]}}, nil, nil, ok, ErrBadRound},
		{"empty ring", Round{}, nil, nil, ok, ErrBadRound},
		{"wire", Round{Ring: ids}, nil, nil, Options{Op: Sum}, ErrBadOptions},
		{"op", Round{Ring: ids}, nil, nil, Options{Wire: Float32}, ErrBadOptions},
		{"weight", Round{Ring: ids}, nil, nil, Options{Wire: Float32, Op: WeightedMean, Weight: -1}, ErrBadOptions},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := rs[0].AllReduce(ctx, ids[0], c.round, c.src, c.dst, c.opt)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestStalledPeerTimesOut(t *testing.T) {
	n := 3
	cfg := faultConfig()
	cfg.FrameTimeout = 500 * time.Millisecond
	cfg.NoticeGrace = 500 * time.Millisecond
	ids := testIDs(t, n)
	net, rs := memRing(t, cfg, ids)
	var stalled atomic.Bool
	net.SetHooks(MemHooks{BeforeWrite: func(f, _ peer.ID, b []byte) bool {
		if f == ids[1] && len(b) == MinChunkBytes && stalled.CompareAndSwap(false, true) {
			time.Sleep(2 * time.Second) // longer than FrameTimeout
		}
		return false
	}})
	src := testInputs(17, n, 20_000)
	outs := runRound(testCtx(t), rs, Round{Mesh: "m", Ring: ids}, src, sameOpts(n, Options{Wire: Float32, Op: Sum}))
	for i, o := range outs {
		var pe *PeerError
		if !errors.As(o.err, &pe) {
			t.Fatalf("member %d: got %v, want a *PeerError", i, o.err)
		}
	}
}
