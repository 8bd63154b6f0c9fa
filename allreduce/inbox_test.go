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

// TestStaleAttemptStreamNotAccepted checks that a lane stream of another
// attempt of the same step, still open and held at its receiver, never
// joins the current attempt's round. node gives every attempt its own
// identity (Round.Attempt is the ballot number, the mesh name carries a
// hash of the ballot's proposer), so a stream of an attempt given up is
// either keyed apart (another attempt number: it stays held, the current
// round runs without it) or refused on its header (the same number under
// another round name). Either way no stale bytes are reduced.
func TestStaleAttemptStreamNotAccepted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stale func(Round) Round
		keyed bool // the stale stream is keyed apart from the current round's
	}{
		{"other attempt", func(r Round) Round { r.Attempt--; return r }, true},
		{"same attempt, other round name", func(r Round) Round { r.Mesh += "-stale"; return r }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 3
			ids := testIDs(t, n)
			net, rs := memRing(t, testConfig(), ids)
			src := testInputs(21, n, 10_000)
			opts := sameOpts(n, Options{Wire: Float32, Op: Sum})
			cur := Round{Mesh: "m/0123456789abcdef", Step: 5, Attempt: 2, Ring: ids}
			// Member 1's lane-0 stream of the stale attempt to its successor, 2.
			h := rs[1].newRun(ids[1], tc.stale(cur), src[1], make([]float32, len(src[1])), opts[1]).header(0)
			ctx, cancel := contextWithCancel(t)
			stale := make(chan error, 1)
			go func() {
				s, err := net.Transport(ids[1]).Dial(ctx, ids[2], h)
				if s != nil {
					_ = s.Reset()
				}
				stale <- err
			}()
			b := net.Transport(ids[2]).inbox
			k := inKey{ids[1], h.key()}
			for deadline := time.Now().Add(20 * time.Second); ; {
				b.mu.Lock()
				held := b.held[k] != nil
				b.mu.Unlock()
				if held {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("stale stream never held")
				}
				time.Sleep(5 * time.Millisecond)
			}

			outs := runRound(testCtx(t), rs, cur, src, opts)
			var ok []outcome
			for _, o := range outs {
				if o.err == nil {
					ok = append(ok, o)
				}
			}
			if tc.keyed {
				checkOutcomes(t, outs, src, opts)
				b.mu.Lock()
				held := b.held[k] != nil
				b.mu.Unlock()
				if !held {
					t.Fatalf("the stale stream is no longer held after the current round")
				}
			} else if len(ok) > 0 {
				// The round may fail on the stale header (it is retried
				// under a new ballot) or win the race with its own
				// stream; what succeeds is the current attempt's sum.
				checkOutcomes(t, ok, src, opts)
			}
			select {
			case err := <-stale:
				if err == nil {
					t.Fatalf("the stale stream was acked")
				}
				if !errors.Is(err, ErrHeaderMismatch) && !errors.Is(err, ErrUnexpectedStream) {
					t.Fatalf("stale stream: got %v, want a header mismatch or a newer stream's rejection", err)
				}
			default:
				if !tc.keyed {
					t.Fatalf("the stale stream is still waiting for a verdict")
				}
				cancel()
				if err := <-stale; err == nil {
					t.Fatalf("the stale stream was acked")
				}
			}
		})
	}
}
