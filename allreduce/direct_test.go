package allreduce

import (
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func transportOf(r *Reducer) *StreamTransport { return r.tr.(*StreamTransport) }

// laneAddr is the address of tr's lane listener (closing it first when
// closeIt: the port is then free but still offered); the test fails when
// there is none.
func laneAddr(t *testing.T, tr *StreamTransport, closeIt bool) string {
	t.Helper()
	var addr string
	tr.mu.Lock()
	for _, ln := range tr.listeners {
		addr = ln.Addr().String()
		if closeIt {
			_ = ln.Close()
		}
	}
	tr.mu.Unlock()
	if addr == "" {
		t.Fatal("no lane listener")
	}
	return addr
}

// eventually polls cond until it holds (or fails the test after 30 s).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDirectLanes runs rounds on direct lanes under TLS and in plaintext
// (TrustedNetwork) and checks the results and that every lane each member
// sent went direct; lanes under DirectMinBytes stay on their streams.
func TestDirectLanes(t *testing.T) {
	cases := []struct {
		name    string
		trusted bool
		min     int
		mode    string
		direct  bool
	}{
		{"tls", false, 0, LaneModeTLS, true},
		{"plaintext", true, 0, LaneModePlaintext, true},
		{"small lanes stay", false, 1 << 20, LaneModeTLS, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := 3
			cfg := testConfig()
			cfg.TrustedNetwork, cfg.DirectMinBytes = c.trusted, c.min
			ids, rs := streamRing(t, cfg, newHosts(t, n))
			round := Round{Mesh: "lab", Step: 1, Ring: ids}
			rounds := 0
			for _, o := range []Options{{Wire: Float32, Op: Sum}, {Wire: BFloat16, Op: WeightedMean, Weight: 2}} {
				src := testInputs(uint64(round.Step), n, 50_001)
				opts := sameOpts(n, o)
				checkOutcomes(t, runRound(testCtx(t), rs, round, src, opts), src, opts)
				round.Step++
				rounds++
			}
			sent := uint64(rounds * cfg.Lanes)
			for i, r := range rs {
				st := transportOf(r).LaneStats()
				want := LaneStats{Mode: c.mode, Direct: sent}
				if !c.direct {
					want = LaneStats{Mode: c.mode, Stream: sent}
				}
				if st != want {
					t.Errorf("member %d: lane stats %+v, want %+v", i, st, want)
				}
			}
		})
	}
}

// TestDirectLaneFallback makes member 1's lane port unreachable (its
// listener closed, the port still offered): member 0's lanes fall back to
// the libp2p streams, the rounds succeed, and the fallback is counted.
func TestDirectLaneFallback(t *testing.T) {
	n := 2
	ids, rs := streamRing(t, testConfig(), newHosts(t, n))
	opt := sameOpts(n, Options{Wire: Float32, Op: Sum})
	src := testInputs(5, n, 30_000)
	checkOutcomes(t, runRound(testCtx(t), rs, Round{Mesh: "lab", Step: 1, Ring: ids}, src, opt), src, opt)
	laneAddr(t, transportOf(rs[1]), true)
	for step := uint64(2); step <= 3; step++ {
		checkOutcomes(t, runRound(testCtx(t), rs, Round{Mesh: "lab", Step: step, Ring: ids}, src, opt), src, opt)
	}
	st0, st1 := transportOf(rs[0]).LaneStats(), transportOf(rs[1]).LaneStats()
	if want := (LaneStats{Mode: LaneModeTLS, Direct: 2, Fallback: 4}); st0 != want {
		t.Errorf("member 0: lane stats %+v, want %+v", st0, want)
	}
	if want := (LaneStats{Mode: LaneModeTLS, Direct: 6}); st1 != want {
		t.Errorf("member 1: lane stats %+v, want %+v", st1, want)
	}
}

// TestDirectTrustedMismatch: a member with TrustedNetwork and one without
// fail the round with ErrSettingsMismatch naming the field.
func TestDirectTrustedMismatch(t *testing.T) {
	hs := newHosts(t, 2)
	trusted, plain := testConfig(), testConfig()
	trusted.TrustedNetwork = true
	ids := []peer.ID{hs[0].ID(), hs[1].ID()}
	rs := []*Reducer{}
	for i, cfg := range []Config{trusted, plain} {
		tr := NewStreamTransport(hs[i], cfg, nil)
		t.Cleanup(func() { _ = tr.Close() })
		rs = append(rs, New(cfg, tr, nil, nil))
	}
	src := testInputs(7, 2, 10_000)
	outs := runRound(testCtx(t), rs, Round{Mesh: "lab", Step: 1, Ring: ids}, src, sameOpts(2, Options{Wire: Float32, Op: Sum}))
	for i, o := range outs {
		if !errors.Is(o.err, ErrSettingsMismatch) {
			t.Fatalf("member %d: got %v, want ErrSettingsMismatch", i, o.err)
		}
	}
	if !strings.Contains(outs[0].err.Error()+outs[1].err.Error(), "trusted_network") {
		t.Errorf("errors do not name trusted_network: %v; %v", outs[0].err, outs[1].err)
	}
}

// TestDirectLaneResetMidRound resets member 1's lane connections while a
// round runs: every member's attempt fails with a peer error (the reset,
// not a timeout), and the next attempt succeeds.
func TestDirectLaneResetMidRound(t *testing.T) {
	for _, trusted := range []bool{false, true} {
		name := map[bool]string{false: "tls", true: "plaintext"}[trusted]
		t.Run(name, func(t *testing.T) {
			n := 3
			cfg := testConfig()
			cfg.ChunkBytes = 64 << 10
			cfg.TrustedNetwork = trusted
			ids, rs := streamRing(t, cfg, newHosts(t, n))
			opt := sameOpts(n, Options{Wire: Float32, Op: Sum})
			src := testInputs(9, n, 4<<20)
			ctx := testCtx(t)
			done := make(chan []outcome, 1)
			round := Round{Mesh: "lab", Step: 1, Ring: ids}
			go func() { done <- runRound(ctx, rs, round, src, opt) }()
			tr := transportOf(rs[1])
			var conns []*laneConn
			eventually(t, "member 1's lane connections", func() bool {
				tr.mu.Lock()
				defer tr.mu.Unlock()
				conns = conns[:0]
				for c := range tr.conns {
					conns = append(conns, c)
				}
				return len(conns) > 0
			})
			for _, c := range conns {
				_ = c.Reset()
			}
			outs := <-done
			for i, o := range outs {
				var pe *PeerError
				if !errors.As(o.err, &pe) || errors.Is(o.err, ErrTimeout) || errors.Is(o.err, ErrRoundNotStarted) {
					t.Fatalf("member %d: got %v, want a *PeerError from the reset (not a timeout)", i, o.err)
				}
			}
			round.Attempt++
			checkOutcomes(t, runRound(ctx, rs, round, src, opt), src, opt)
		})
	}
}

// TestDirectUnauthenticatedRefused opens lane connections without the
// mesh handshake: a wrong magic, an unknown token and more idle
// connections from one IP than allowed are refused (closed, counted), and
// the members keep reducing.
func TestDirectUnauthenticatedRefused(t *testing.T) {
	n := 2
	ids, rs := streamRing(t, testConfig(), newHosts(t, n))
	opt := sameOpts(n, Options{Wire: Float32, Op: Sum})
	src := testInputs(11, n, 20_000)
	checkOutcomes(t, runRound(testCtx(t), rs, Round{Mesh: "lab", Step: 1, Ring: ids}, src, opt), src, opt)
	tr := transportOf(rs[1])
	addr := laneAddr(t, tr, false)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// refused reads from c until the listener drops it.
	refused := func(what string, c net.Conn) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s: the connection was not dropped", what)
		}
	}
	c := dial()
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat(" ", 16)))
	refused("wrong magic", c)
	c = dial()
	tok := make([]byte, laneTokenLen)
	_, _ = rand.Read(tok)
	_, _ = c.Write(append([]byte(laneMagic), tok...))
	refused("unknown token", c)
	// The dialler sees a refused connection closed before the listener's
	// goroutine stops counting it: wait, or the idle ones below would
	// meet the per-IP limit early (a flake seen under load).
	eventually(t, "the refused connections to be uncounted", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.unauthN == 0
	})
	var idle []net.Conn
	for range maxUnauthLanesPerIP {
		idle = append(idle, dial())
	}
	eventually(t, "the idle connections to be counted", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.unauthN == maxUnauthLanesPerIP
	})
	// Over the limit the listener resets the connection as it accepts it,
	// which can reach the dialler before its connect returns.
	if over, err := net.Dial("tcp", addr); err == nil {
		refused("one connection over the per-IP limit", over)
		_ = over.Close()
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("one connection over the per-IP limit: %v", err)
	}
	if got := tr.LaneStats().Refused; got != 3 {
		t.Errorf("refused %d lane connections, want 3", got)
	}
	for _, c := range idle {
		_ = c.Close()
	}
	eventually(t, "the idle connections to be dropped", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.unauthN == 0
	})
	checkOutcomes(t, runRound(testCtx(t), rs, Round{Mesh: "lab", Step: 2, Ring: ids}, src, opt), src, opt)
}

// TestDirectLanesOffSender (issue 26 defect 1): a member with direct
// lanes off sends to one that offers TLS lanes. It declines the offers
// and stays on its streams (it has no security transport, so it must not
// dial in plaintext): the rounds succeed, its lanes are counted as
// stream lanes, and none of its lanes reaches the receiver's listener.
func TestDirectLanesOffSender(t *testing.T) {
	hs := newHosts(t, 2)
	on, off := testConfig(), testConfig()
	off.DirectLanes = false
	ids := []peer.ID{hs[0].ID(), hs[1].ID()}
	var rs []*Reducer
	for i, cfg := range []Config{on, off} {
		tr := NewStreamTransport(hs[i], cfg, nil)
		t.Cleanup(func() { _ = tr.Close() })
		rs = append(rs, New(cfg, tr, nil, nil))
	}
	opt := sameOpts(2, Options{Wire: Float32, Op: Sum})
	src := testInputs(13, 2, 60_000)
	for step := uint64(1); step <= 2; step++ {
		checkOutcomes(t, runRound(testCtx(t), rs, Round{Mesh: "lab", Step: step, Ring: ids}, src, opt), src, opt)
	}
	sent := uint64(2 * on.Lanes)
	if st, want := transportOf(rs[1]).LaneStats(), (LaneStats{Mode: LaneModeOff, Stream: sent}); st != want {
		t.Errorf("lanes-off member: lane stats %+v, want %+v", st, want)
	}
	if st := transportOf(rs[0]).LaneStats(); st.Refused != 0 || st.Direct+st.Fallback+st.Stream != sent {
		t.Errorf("TLS member: lane stats %+v, want %d lanes sent and none refused", st, sent)
	}
}

// TestDirectTrustedImpostorPort (issue 26 defect 4): in trusted
// (plaintext) mode, member 1's offered lane port is held by another
// process that does not speak the lane protocol. Member 0 waits for the
// listener's confirmation, does not get it, and falls back to the stream:
// the rounds succeed, the fallbacks are counted, and the impostor gets no
// more than the token.
func TestDirectTrustedImpostorPort(t *testing.T) {
	n := 2
	cfg := testConfig()
	cfg.TrustedNetwork = true
	ids, rs := streamRing(t, cfg, newHosts(t, n))
	opt := sameOpts(n, Options{Wire: Float32, Op: Sum})
	src := testInputs(15, n, 30_000)
	checkOutcomes(t, runRound(testCtx(t), rs, Round{Mesh: "lab", Step: 1, Ring: ids}, src, opt), src, opt)
	addr := laneAddr(t, transportOf(rs[1]), true)
	imp, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot take over the lane port %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = imp.Close() })
	var got atomic.Int64
	go func() {
		for {
			c, err := imp.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
				n, _ := io.Copy(io.Discard, c)
				got.Add(n)
			}()
		}
	}()
	for step := uint64(2); step <= 3; step++ {
		checkOutcomes(t, runRound(testCtx(t), rs, Round{Mesh: "lab", Step: step, Ring: ids}, src, opt), src, opt)
	}
	if st := transportOf(rs[0]).LaneStats(); st.Fallback == 0 {
		t.Errorf("member 0: lane stats %+v, want fallbacks to the stream", st)
	}
	_ = imp.Close()
	if max := int64(len(laneMagic) + laneTokenLen); got.Load() > 2*max {
		t.Errorf("the impostor received %d bytes, want at most the magic and token of each dial", got.Load())
	}
}

// TestDirectOutsidersCannotTakeMembersLanes (issue 26 defect 3): outsiders
// without the mesh secret hold idle connections to member 1's lane port
// from 8 addresses, filling the global cap of unauthenticated lane
// connections. The members' lanes still connect directly: they come from
// an address member 1 offered lanes to.
func TestDirectOutsidersCannotTakeMembersLanes(t *testing.T) {
	n := 2
	ids, rs := streamRing(t, testConfig(), newHosts(t, n))
	opt := sameOpts(n, Options{Wire: Float32, Op: Sum})
	src := testInputs(17, n, 30_000)
	checkOutcomes(t, runRound(testCtx(t), rs, Round{Mesh: "lab", Step: 1, Ring: ids}, src, opt), src, opt)
	tr := transportOf(rs[1])
	addr := laneAddr(t, tr, false)
	for ip := 2; ip < 2+maxUnauthLanes/maxUnauthLanesPerIP; ip++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(ip))}}
		for range maxUnauthLanesPerIP {
			c, err := d.Dial("tcp", addr)
			if err != nil {
				t.Skipf("cannot dial from 127.0.0.%d: %v", ip, err)
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}
	eventually(t, "the outsiders to fill the cap", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.unauthN == maxUnauthLanes
	})
	before := transportOf(rs[0]).LaneStats()
	checkOutcomes(t, runRound(testCtx(t), rs, Round{Mesh: "lab", Step: 2, Ring: ids}, src, opt), src, opt)
	after := transportOf(rs[0]).LaneStats()
	if after.Fallback != before.Fallback || after.Direct == before.Direct {
		t.Errorf("member 0's lanes with the cap full: %+v (before the round %+v), want direct, no fallback", after, before)
	}
}
