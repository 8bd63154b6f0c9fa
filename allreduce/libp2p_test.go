package allreduce

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	yamux "github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/ringmesh/ringmesh/internal/p2pconf"
)

// newHosts starts n libp2p hosts on 127.0.0.1 with the production options
// (TCP, TLS first) and tells each about the others' addresses.
func newHosts(t testing.TB, n int) []host.Host {
	t.Helper()
	hs := make([]host.Host, n)
	for i := range hs {
		opts := p2pconf.HostOptions()
		if os.Getenv("RINGMESH_BENCH_INSECURE") != "" {
			// Plaintext, only to measure what encryption costs.
			rm, err := p2pconf.ResourceManager(p2pconf.PeerMemory)
			if err != nil {
				t.Fatal(err)
			}
			opts = []libp2p.Option{libp2p.NoSecurity, libp2p.Muxer(yamux.ID, p2pconf.Muxer()), libp2p.ResourceManager(rm)}
		}
		opts = append(opts,
			libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
			libp2p.Transport(tcp.NewTCPTransport),
			libp2p.DisableRelay(),
		)
		h, err := libp2p.New(opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		hs[i] = h
	}
	for _, a := range hs {
		for _, b := range hs {
			if a != b {
				a.Peerstore().AddAddrs(b.ID(), b.Addrs(), peerstore.PermanentAddrTTL)
			}
		}
	}
	// Connect once up front, one pair at a time: two TCP hosts dialing
	// each other at the same instant from reused ports can collide in a
	// simultaneous open (the mesh keeps its members connected anyway).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, a := range hs {
		for _, b := range hs[i+1:] {
			if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return hs
}

// streamRing builds one StreamTransport and Reducer per host.
func streamRing(t testing.TB, cfg Config, hs []host.Host) ([]peer.ID, []*Reducer) {
	t.Helper()
	ids := make([]peer.ID, len(hs))
	rs := make([]*Reducer, len(hs))
	for i, h := range hs {
		tr := NewStreamTransport(h, cfg, nil)
		t.Cleanup(func() { _ = tr.Close() })
		ids[i] = h.ID()
		rs[i] = New(cfg, tr, nil, nil)
	}
	return ids, rs
}

func TestStreamAllReduce(t *testing.T) {
	for _, n := range []int{2, 3, 4} {
		t.Run(string(rune('0'+n)), func(t *testing.T) {
			hs := newHosts(t, n)
			cfg := testConfig()
			cfg.DirectLanes = false // streams only; direct_test.go covers the lanes
			ids, rs := streamRing(t, cfg, hs)
			round := Round{Mesh: "lab", Step: 1, Ring: ids}
			for _, o := range []Options{{Wire: Float32, Op: Sum}, {Wire: BFloat16, Op: WeightedMean, Weight: 2}} {
				src := testInputs(uint64(n), n, 50_001)
				opts := sameOpts(n, o)
				outs := runRound(testCtx(t), rs, round, src, opts)
				checkOutcomes(t, outs, src, opts)
				round.Step++
			}
		})
	}
}

// evil speaks the protocol by hand from host h to `to`: it writes the
// header and, after the verdict, whatever frames says.
func evil(ctx context.Context, h host.Host, to peer.ID, hdr []byte, frames func(s Stream) error) error {
	s, err := h.NewStream(ctx, to, protocol.ID(ProtocolID))
	if err != nil {
		return err
	}
	defer func() { _ = s.Reset() }()
	_ = s.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := s.Write(hdr); err != nil {
		return err
	}
	c, err := readControl(s)
	if err != nil {
		return err
	}
	if c.Type != ctrlAck {
		return errors.New(c.Reason)
	}
	// Stay on the stream if offered a direct lane.
	if c, err = readControl(s); err != nil {
		return err
	}
	if c.Type == ctrlLane && c.Code == laneOffer {
		if _, err := s.Write([]byte{laneStay}); err != nil {
			return err
		}
	}
	if frames != nil {
		if err := frames(s); err != nil {
			return err
		}
	}
	_, _ = readControl(s) // wait for the receiver to give up
	return nil
}

// TestStreamBadPeer runs a 3-ring [bad, a, b] where `bad` is a host that
// does not run the reducer but opens a stream to a with a wrong header, a
// short chunk or garbage. Every honest member's round fails cleanly, and
// a and b then complete a round between themselves.
func TestStreamBadPeer(t *testing.T) {
	cfg := testConfig()
	cfg.NoticeGrace = 500 * time.Millisecond
	cases := []struct {
		name   string
		mutate func(h *Header)
		frames func(s Stream) error
		raw    []byte
		// settings: a difference no retry changes (ErrSettingsMismatch)
		settings bool
	}{
		{name: "wrong members hash", mutate: func(h *Header) { h.MembersHash[0]++ }},
		{name: "wrong dtype", mutate: func(h *Header) { h.DType = Float16 }, settings: true},
		{name: "unknown dtype", mutate: func(h *Header) { h.DType = 200 }, settings: true},
		{name: "short chunk", frames: func(s Stream) error { return WriteFrame(s, make([]byte, 3)) }},
		{name: "garbage frame", frames: func(s Stream) error { _, err := s.Write([]byte{0xff, 0xff, 0xff, 0xff, 1, 2}); return err }},
		{name: "garbage header", raw: []byte("GET / HTTP/1.1\r\n\r\n" + string(make([]byte, 60)))},
	}
	hs := newHosts(t, 3)
	ids, rs := streamRing(t, cfg, hs)
	// hs[0] plays the bad peer: it speaks by hand, and sinks what its
	// ring neighbours send it (ack, then discard).
	bad := hs[0]
	bad.SetStreamHandler(protocol.ID(ProtocolID), func(s network.Stream) {
		defer func() { _ = s.Reset() }()
		_ = s.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := ReadHeader(s); err != nil {
			return
		}
		if _, err := s.Write([]byte{ctrlAck, ctrlLane, laneNone}); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, s)
	})
	n := 3
	src := testInputs(21, n, 20_000)
	for step, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := testCtx(t)
			round := Round{Mesh: "lab", Step: uint64(step), Ring: ids}
			opt := Options{Wire: Float32, Op: Sum}
			x := rs[1].newRun(ids[1], round, src[1], make([]float32, len(src[1])), opt)
			h := x.header(0) // lane 0: bad -> a
			if c.mutate != nil {
				c.mutate(&h)
			}
			hdr := AppendHeader(nil, h)
			if c.raw != nil {
				hdr = c.raw
			}
			evilDone := make(chan error, 1)
			go func() { evilDone <- evil(ctx, bad, ids[1], hdr, c.frames) }()
			outs := runRoundAs(ctx, rs[1:], ids[1:], round, src[1:], sameOpts(2, opt))
			<-evilDone
			for i, o := range outs {
				var pe *PeerError
				if !errors.As(o.err, &pe) {
					t.Fatalf("member %d: got %v, want a *PeerError", i+1, o.err)
				}
			}
			if c.mutate != nil && !errors.Is(outs[0].err, ErrHeaderMismatch) {
				t.Fatalf("member a: got %v, want ErrHeaderMismatch", outs[0].err)
			}
			if c.settings && !errors.Is(outs[0].err, ErrSettingsMismatch) {
				t.Fatalf("member a: got %v, want ErrSettingsMismatch", outs[0].err)
			}
			// The hosts keep serving: a and b reduce between themselves.
			good := Round{Mesh: "lab", Step: uint64(step), Attempt: 1, Ring: ids[1:]}
			opts := sameOpts(2, opt)
			outs = runRound(ctx, rs[1:], good, src[1:], opts)
			checkOutcomes(t, outs, src[1:], opts)
		})
	}
}

func TestStreamTransportClose(t *testing.T) {
	hs := newHosts(t, 2)
	cfg := testConfig()
	ids, rs := streamRing(t, cfg, hs)
	// Member 0 starts alone; closing member 1's transport (a node shutting
	// down) must not leave member 0 hanging.
	tr := rs[1].tr.(*StreamTransport)
	done := make(chan error, 1)
	go func() {
		_, err := rs[0].AllReduce(testCtx(t), ids[0], Round{Mesh: "lab", Ring: ids}, make([]float32, 10_000), make([]float32, 10_000), Options{Wire: Float32, Op: Sum})
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // let member 0's streams reach the inbox
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	var pe *PeerError
	if err := <-done; !errors.As(err, &pe) || pe.Peer != ids[1] {
		t.Fatalf("got %v, want a *PeerError naming member 1", err)
	}
}
