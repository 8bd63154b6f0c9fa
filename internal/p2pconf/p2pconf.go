// Package p2pconf owns the tuned libp2p host options, the one source for
// the production host (mesh) and the all-reduce tests and benchmarks:
// security transport order, the stream multiplexer and its flow-control
// windows, the all-reduce protocol's ID, and resource-manager limits sized
// so a bulk all-reduce stream is never throttled while one peer still
// cannot exhaust a host.
package p2pconf

import (
	"fmt"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	yamux "github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
)

// AllReduceProtocol is the protocol whose streams carry bulk gradient data
// (allreduce.ProtocolID is this); it gets its own, larger,
// resource-manager limits.
const AllReduceProtocol = protocol.ID("/ringmesh/allreduce/2")

// StreamWindow is the largest yamux receive window per stream (bytes):
// large enough that a bulk stream on a fast, high-latency link is not
// window-limited; each window is charged to the connection's resource
// scope while it is in use.
const StreamWindow = 16 << 20

// PeerMemory is the default resource-manager memory of one peer (and one
// connection, and the all-reduce protocol per peer): room for several bulk
// streams at StreamWindow each, yet one peer cannot exhaust the host.
const PeerMemory = 1 << 30

// Security returns the security transports in order of preference: TLS 1.3
// first (AES-GCM, hardware accelerated on common CPUs), Noise as the
// fallback.
func Security() []libp2p.Option {
	return []libp2p.Option{
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Security(noise.ID, noise.New),
	}
}

// HostOptions returns Security, yamux with StreamWindow windows and
// ResourceManager(PeerMemory): the tuning of the production host for tests
// and benchmarks that build bare hosts. Transports and listen addresses are
// left to the caller.
func HostOptions() []libp2p.Option {
	return append(Security(),
		libp2p.Muxer(yamux.ID, Muxer()),
		func(cfg *libp2p.Config) error {
			// Built with the host, so that an error surfaces from libp2p.New.
			rm, err := ResourceManager(PeerMemory)
			if err != nil {
				return err
			}
			return libp2p.ResourceManager(rm)(cfg)
		})
}

// Muxer returns the yamux multiplexer with StreamWindow windows.
func Muxer() *yamux.Transport {
	t := *yamux.DefaultTransport
	t.MaxStreamWindowSize = StreamWindow
	return &t
}

// ResourceManager returns a resource manager whose limits start from
// go-libp2p's auto-scaled defaults, with peerMemory bytes for one peer, one
// connection, the transient scope and the all-reduce protocol per peer,
// 64 MiB per stream, and four peers' worth for the whole host and the
// all-reduce protocol. opts go to rcmgr (the mesh adds its connection rate
// limiter).
func ResourceManager(peerMemory int64, opts ...rcmgr.Option) (network.ResourceManager, error) {
	peer := rcmgr.ResourceLimits{Memory: rcmgr.LimitVal64(peerMemory)}
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	base := scaling.AutoScale()
	partial := rcmgr.PartialLimitConfig{
		System:       rcmgr.ResourceLimits{Memory: rcmgr.LimitVal64(max(4*peerMemory, int64(base.ToPartialLimitConfig().System.Memory)))},
		Transient:    peer,
		PeerDefault:  rcmgr.ResourceLimits{Memory: rcmgr.LimitVal64(peerMemory), Streams: 1024, StreamsInbound: 512, StreamsOutbound: 512},
		Stream:       rcmgr.ResourceLimits{Memory: rcmgr.LimitVal64(64 << 20)},
		Conn:         peer,
		ProtocolPeer: map[protocol.ID]rcmgr.ResourceLimits{AllReduceProtocol: peer},
		Protocol: map[protocol.ID]rcmgr.ResourceLimits{AllReduceProtocol: {
			Memory:  rcmgr.LimitVal64(4 * peerMemory),
			Streams: 1024,
		}},
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(partial.Build(base)), opts...)
	if err != nil {
		return nil, fmt.Errorf("p2pconf: resource manager: %w", err)
	}
	return rm, nil
}

// ClearDialBackoff lets the next dial of p on n go out at once. Callers
// that pace their own dials (the mesh's joins and probes, the round
// senders, the all-reduce lanes) use it so that libp2p's dial backoff (5 s
// and up after a failure, e.g. during a partition) does not turn a dial
// after a heal into an instant "dial backoff" failure.
// (network.WithForceDirectDial would skip the backoff too, but go-libp2p
// v0.51 dereferences a nil transport with it when the peerstore holds an
// address this host has no transport for, e.g. a QUIC address on a
// TCP-only private-network host.)
func ClearDialBackoff(n network.Network, p peer.ID) {
	if sw, ok := n.(*swarm.Swarm); ok {
		sw.Backoff().Clear(p)
	}
}
