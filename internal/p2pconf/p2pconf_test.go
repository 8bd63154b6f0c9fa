package p2pconf

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	yamuxmux "github.com/libp2p/go-yamux/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMuxer(t *testing.T) {
	m := Muxer()
	if m.MaxStreamWindowSize != StreamWindow {
		t.Fatalf("got window %d, want %d", m.MaxStreamWindowSize, StreamWindow)
	}
	if err := yamuxmux.VerifyConfig(m.Config()); err != nil {
		t.Fatalf("got invalid yamux config: %v", err)
	}
}

// TestBulkStream moves 64 MiB over one stream between two hosts built
// with HostOptions on 127.0.0.1: TLS is negotiated and the resource
// manager does not throttle or refuse the stream.
func TestBulkStream(t *testing.T) {
	opts := func() []libp2p.Option {
		return append(HostOptions(),
			libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
			libp2p.Transport(tcp.NewTCPTransport),
			libp2p.DisableRelay())
	}
	a, err := libp2p.New(opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := libp2p.New(opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	const size = 64 << 20
	payload := bytes.Repeat([]byte("ringmesh"), size/8)
	got := make(chan []byte, 1)
	b.SetStreamHandler(AllReduceProtocol, func(s network.Stream) {
		defer s.Close()
		data, _ := io.ReadAll(s)
		got <- data
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
	s, err := a.NewStream(ctx, b.ID(), AllReduceProtocol)
	if err != nil {
		t.Fatal(err)
	}
	if sec := s.Conn().ConnState().Security; sec != "/tls/1.0.0" {
		t.Fatalf("got security %q, want /tls/1.0.0", sec)
	}
	if _, err := s.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case data := <-got:
		if !bytes.Equal(data, payload) {
			t.Fatalf("got %d bytes, want the %d sent", len(data), len(payload))
		}
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	_ = s.Close()
}
