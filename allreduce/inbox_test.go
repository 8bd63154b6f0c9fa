package allreduce

import (
	"errors"
	"testing"
	"time"
)

// TestInboxBounds checks that streams for rounds not started are held at
// most MaxHeld at a time and at most HoldTimeout long.
func TestInboxBounds(t *testing.T) {
	cfg := testConfig()
	cfg.MaxHeld = 1
	cfg.HoldTimeout = 2 * time.Second
	ids := testIDs(t, 2)
	net, _ := memRing(t, cfg, ids)
	a := net.Transport(ids[0])
	h := Header{Version: Version, DType: Float32, Op: Sum, Lanes: 1, Step: 1, ChunkBytes: MinChunkBytes, Mesh: "m"}
	ctx := testCtx(t)

	first := make(chan error, 1)
	go func() {
		_, err := a.Dial(ctx, ids[1], h) // held: ids[1] has not started step 1
		first <- err
	}()
	// Wait until the first stream is held, then a second is refused.
	b := net.Transport(ids[1]).inbox
	for deadline := time.Now().Add(20 * time.Second); ; {
		b.mu.Lock()
		held := len(b.held)
		b.mu.Unlock()
		if held == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("first stream never held")
		}
		time.Sleep(5 * time.Millisecond)
	}
	h2 := h
	h2.Step = 2
	if _, err := a.Dial(ctx, ids[1], h2); !errors.Is(err, ErrUnexpectedStream) {
		t.Fatalf("second held stream: got %v, want ErrUnexpectedStream (busy)", err)
	}
	if err := <-first; !errors.Is(err, ErrRoundNotStarted) {
		t.Fatalf("held stream after HoldTimeout: got %v, want ErrRoundNotStarted", err)
	}
}

// TestAcceptTimesOut checks that a member whose neighbour never starts
// gives up after StartTimeout with a *PeerError naming it.
func TestAcceptTimesOut(t *testing.T) {
	cfg := testConfig()
	cfg.StartTimeout = 300 * time.Millisecond
	ids := testIDs(t, 3)
	_, rs := memRing(t, cfg, ids)
	src := testInputs(1, 3, 100)
	// Members 0 and 1 run; member 2 never starts.
	outs := runRound(testCtx(t), rs[:2], Round{Mesh: "m", Ring: ids}, src[:2], sameOpts(2, Options{Wire: Float32, Op: Sum}))
	for i, o := range outs {
		var pe *PeerError
		if !errors.As(o.err, &pe) {
			t.Fatalf("member %d: got %v, want a *PeerError", i, o.err)
		}
	}
}

// TestInboxNewerStreamSupersedes checks that a second stream for the same
// round and lane replaces a held one, which is refused.
func TestInboxNewerStreamSupersedes(t *testing.T) {
	cfg := testConfig()
	ids := testIDs(t, 2)
	net, _ := memRing(t, cfg, ids)
	a := net.Transport(ids[0])
	h := Header{Version: Version, DType: Float32, Op: Sum, Lanes: 1, Step: 1, ChunkBytes: MinChunkBytes, Mesh: "m"}
	ctx := testCtx(t)
	first := make(chan error, 1)
	go func() {
		_, err := a.Dial(ctx, ids[1], h)
		first <- err
	}()
	b := net.Transport(ids[1]).inbox
	for deadline := time.Now().Add(20 * time.Second); ; {
		b.mu.Lock()
		held := len(b.held)
		b.mu.Unlock()
		if held == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("first stream never held")
		}
		time.Sleep(5 * time.Millisecond)
	}
	second := make(chan error, 1)
	go func() {
		s, err := a.Dial(ctx, ids[1], h)
		if s != nil {
			_ = s.Reset()
		}
		second <- err
	}()
	if err := <-first; !errors.Is(err, ErrUnexpectedStream) {
		t.Fatalf("superseded stream: got %v, want ErrUnexpectedStream", err)
	}
	if _, err := net.Transport(ids[1]).Accept(ctx, ids[0], h); err != nil {
		t.Fatalf("accepting the newer stream: got %v", err)
	}
	if err := <-second; err != nil {
		t.Fatalf("newer stream: got %v, want an ack", err)
	}
}
