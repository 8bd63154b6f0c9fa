package allreduce

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
)

// logBuffer collects a logger's lines from many goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDirectPortsExhausted (issue 26 defect 6): member 0's lane dials fail
// as they do when the host has no ephemeral port left (EADDRNOTAVAIL:
// lane connections in TIME_WAIT). Its lanes fall back to the streams, the
// rounds succeed, every such dial is counted, the warning names the cause
// and the remedies and is logged once (rate-bounded), and the peer is
// not blamed: once dials work again the lanes go direct at once.
func TestDirectPortsExhausted(t *testing.T) {
	hs := newHosts(t, 2)
	cfg := testConfig()
	var logs logBuffer
	ids := []peer.ID{hs[0].ID(), hs[1].ID()}
	var rs []*Reducer
	for i, h := range hs {
		var lg *slog.Logger
		if i == 0 {
			lg = slog.New(slog.NewTextHandler(&logs, nil))
		}
		tr := NewStreamTransport(h, cfg, lg)
		t.Cleanup(func() { _ = tr.Close() })
		rs = append(rs, New(cfg, tr, nil, nil))
	}
	tr := transportOf(rs[0])
	tr.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.EADDRNOTAVAIL)}
	}
	opt := sameOpts(2, Options{Wire: Float32, Op: Sum})
	src := testInputs(19, 2, 30_000)
	for step := uint64(1); step <= 2; step++ {
		checkOutcomes(t, runRound(testCtx(t), rs, Round{Mesh: "lab", Step: step, Ring: ids}, src, opt), src, opt)
	}
	sent := uint64(2 * cfg.Lanes)
	if st, want := tr.LaneStats(), (LaneStats{Mode: LaneModeTLS, Fallback: sent, PortsExhausted: sent}); st != want {
		t.Errorf("member 0: lane stats %+v, want %+v", st, want)
	}
	out := logs.String()
	if n := strings.Count(out, "ran out of local ports"); n != 1 {
		t.Errorf("the out-of-ports warning was logged %d times, want once (rate-bounded); log:\n%s", n, out)
	}
	for _, want := range []string{"TIME_WAIT", "ip_local_port_range", "tcp_tw_reuse", "--allreduce-lanes"} {
		if !strings.Contains(out, want) {
			t.Errorf("the out-of-ports warning does not mention %s; log:\n%s", want, out)
		}
	}
	if strings.Contains(out, "direct lane connection failed") {
		t.Errorf("out of local ports was reported as the peer's failure; log:\n%s", out)
	}
	tr.dial = (&net.Dialer{Timeout: laneDialTimeout}).DialContext
	checkOutcomes(t, runRound(testCtx(t), rs, Round{Mesh: "lab", Step: 3, Ring: ids}, src, opt), src, opt)
	if st := tr.LaneStats(); st.Direct != uint64(cfg.Lanes) {
		t.Errorf("member 0 after the ports came back: lane stats %+v, want %d direct lanes", st, cfg.Lanes)
	}
}

// relayedStream presents a stream's connection as relayed.
type relayedStream struct {
	network.Stream
	c network.Conn
}

func (s relayedStream) Conn() network.Conn { return s.c }

// relayedConn is a connection through a relay: its remote address ends
// in /p2p-circuit, or (limited) its Stat says Limited.
type relayedConn struct {
	network.Conn
	limited bool
}

func (c relayedConn) RemoteMultiaddr() ma.Multiaddr {
	a := c.Conn.RemoteMultiaddr()
	if c.limited {
		return a
	}
	return a.Encapsulate(ma.StringCast("/p2p/" + c.Conn.RemotePeer().String() + "/p2p-circuit"))
}

func (c relayedConn) Stat() network.ConnStats {
	st := c.Conn.Stat()
	st.Limited = c.limited
	return st
}

// TestDirectRelayedOfferDeclined (issue 26 defect 11a): a lane offer that
// arrives over a relayed connection points at the relay's IP (a lying
// member could aim the dial at any port there). The dialler declines it
// and stays on the stream, without connecting anywhere.
func TestDirectRelayedOfferDeclined(t *testing.T) {
	for _, limited := range []bool{false, true} {
		name := map[bool]string{false: "p2p-circuit", true: "limited"}[limited]
		t.Run(name, func(t *testing.T) {
			hs := newHosts(t, 2)
			tr := NewStreamTransport(hs[0], testConfig(), nil)
			t.Cleanup(func() { _ = tr.Close() })
			// A port on the "relay" the offer aims at.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ln.Close() })
			var hit atomic.Int64
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					hit.Add(1)
					_ = c.Close()
				}
			}()
			const proto = "/ringmesh/test/lane-offer"
			decision := make(chan byte, 1)
			hs[1].SetStreamHandler(proto, func(s network.Stream) {
				defer func() { _ = s.Close() }()
				c := control{Type: ctrlLane, Code: laneOffer, Port: uint16(ln.Addr().(*net.TCPAddr).Port)}
				_, _ = s.Write(appendControl(nil, c))
				_ = s.SetReadDeadline(time.Now().Add(20 * time.Second))
				var d [1]byte
				_, _ = io.ReadFull(s, d[:])
				decision <- d[0]
			})
			ctx := testCtx(t)
			s, err := hs[0].NewStream(ctx, hs[1].ID(), protocol.ID(proto))
			if err != nil {
				t.Fatal(err)
			}
			ts := &trackedStream{Stream: relayedStream{Stream: s, c: relayedConn{Conn: s.Conn(), limited: limited}}, t: tr}
			got, err := tr.takeLane(ctx, hs[1].ID(), ts)
			if err != nil {
				t.Fatalf("takeLane: %v", err)
			}
			if got != Stream(ts) {
				t.Errorf("takeLane returned %T, want the stream", got)
			}
			if d := <-decision; d != laneStay {
				t.Errorf("lane decision %q, want %q", d, laneStay)
			}
			if n := hit.Load(); n != 0 {
				t.Errorf("the offered address on the relay got %d connections, want none", n)
			}
			if st, want := tr.LaneStats(), (LaneStats{Mode: LaneModeTLS, Stream: 1}); st != want {
				t.Errorf("lane stats %+v, want %+v", st, want)
			}
			_ = got.Reset()
		})
	}
}

// TestDirectLaneListenRetried (issue 26 defect 11b): member 1's first
// lane listen fails. Its lanes stay on streams for laneListenRetry, not
// until restart: after that the listen is tried again and lanes go
// direct.
func TestDirectLaneListenRetried(t *testing.T) {
	cfg := testConfig()
	ids, rs := streamRing(t, cfg, newHosts(t, 2))
	tr := transportOf(rs[1])
	var listens atomic.Int64
	tr.listen = func(network, addr string) (net.Listener, error) {
		if listens.Add(1) == 1 {
			return nil, &net.OpError{Op: "listen", Net: network, Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}
		}
		return net.Listen(network, addr)
	}
	opt := sameOpts(2, Options{Wire: Float32, Op: Sum})
	src := testInputs(21, 2, 30_000)
	lanes := uint64(cfg.Lanes)
	for step := uint64(1); step <= 2; step++ {
		checkOutcomes(t, runRound(testCtx(t), rs, Round{Mesh: "lab", Step: step, Ring: ids}, src, opt), src, opt)
	}
	if st, want := transportOf(rs[0]).LaneStats(), (LaneStats{Mode: LaneModeTLS, Stream: 2 * lanes}); st != want {
		t.Errorf("member 0 with member 1's listen failed: lane stats %+v, want %+v", st, want)
	}
	if n := listens.Load(); n != 1 {
		t.Errorf("member 1 tried to listen %d times within laneListenRetry, want 1", n)
	}
	tr.mu.Lock()
	if len(tr.listenFailed) != 1 {
		t.Errorf("member 1 remembers %d failed listens, want 1", len(tr.listenFailed))
	}
	for ip := range tr.listenFailed {
		tr.listenFailed[ip] = time.Now().Add(-laneListenRetry)
	}
	tr.mu.Unlock()
	checkOutcomes(t, runRound(testCtx(t), rs, Round{Mesh: "lab", Step: 3, Ring: ids}, src, opt), src, opt)
	if st, want := transportOf(rs[0]).LaneStats(), (LaneStats{Mode: LaneModeTLS, Stream: 2 * lanes, Direct: lanes}); st != want {
		t.Errorf("member 0 after laneListenRetry: lane stats %+v, want %+v", st, want)
	}
}

// TestDirectCloseResetsUnauthenticated (issue 26 defect 11c): an outsider
// holds a connection to member 1's lane port without writing a token.
// Close resets it at once instead of waiting for its token deadline.
func TestDirectCloseResetsUnauthenticated(t *testing.T) {
	ids, rs := streamRing(t, testConfig(), newHosts(t, 2))
	opt := sameOpts(2, Options{Wire: Float32, Op: Sum})
	src := testInputs(23, 2, 30_000)
	checkOutcomes(t, runRound(testCtx(t), rs, Round{Mesh: "lab", Step: 1, Ring: ids}, src, opt), src, opt)
	tr := transportOf(rs[1])
	c, err := net.Dial("tcp", laneAddr(t, tr, false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	eventually(t, "the outsider's connection to be counted", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.unauthN == 1
	})
	start := time.Now()
	_ = tr.Close()
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Close took %v with an unauthenticated lane connection open (its token deadline is %v), want at once", el, tr.authTimeout())
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("the outsider's connection is still open after Close")
	}
	if n := tr.LaneStats().Refused; n != 0 {
		t.Errorf("Close counted %d refused lane connections, want 0 (shutdown is no refusal)", n)
	}
}
