// Package p2pconf owns the tuned libp2p host options shared by the
// production host (mesh) and the all-reduce tests and benchmarks: security
// transport order, the stream multiplexer and its flow-control windows, and
// resource-manager limits sized so a bulk all-reduce stream is never
// throttled while one peer still cannot exhaust a host.
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

// AllReduceProtocol is the protocol whose streams carry bulk gradient data;
// it gets its own, larger, resource-manager limits. It mirrors
// allreduce.ProtocolID (p2pconf must not import allreduce).
const AllReduceProtocol = protocol.ID("/ringmesh/allreduce/1")

// StreamWindow is the largest yamux receive window per stream (bytes).
// Larger windows keep a fast link busy across the round trip; each window
// is charged to the connection's resource scope while it is in use.
const StreamWindow = 32 << 20

// BulkMemory is the resource-manager memory allowed to one connection, one
// peer and the all-reduce protocol: enough for several streams at
// StreamWindow each.
const BulkMemory = 512 << 20

// HostOptions returns the libp2p options ringmesh hosts are built with:
// TLS 1.3 first (AES-GCM, hardware accelerated on common CPUs), Noise as the
// fallback, yamux with StreamWindow windows, and a resource manager whose
// limits start from go-libp2p's auto-scaled defaults with the per-stream,
// per-connection, per-peer and all-reduce protocol memory raised to
// BulkMemory. Transports and listen addresses are left to the caller.
func HostOptions() []libp2p.Option {
	return []libp2p.Option{
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, Muxer()),
		resourceManagerOption(),
	}
}

// resourceManagerOption builds the resource manager when the host is built,
// so a construction error surfaces from libp2p.New.
func resourceManagerOption() libp2p.Option {
	return func(cfg *libp2p.Config) error {
		rm, err := ResourceManager()
		if err != nil {
			return err
		}
		return libp2p.ResourceManager(rm)(cfg)
	}
}

// Muxer returns the yamux multiplexer with StreamWindow windows.
func Muxer() *yamux.Transport {
	t := *yamux.DefaultTransport
	t.MaxStreamWindowSize = StreamWindow
	return &t
}

// ResourceManager returns a resource manager with the limits described on
// HostOptions.
func ResourceManager() (network.ResourceManager, error) {
	bulk := rcmgr.ResourceLimits{Memory: rcmgr.LimitVal64(BulkMemory)}
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	base := scaling.AutoScale()
	partial := rcmgr.PartialLimitConfig{
		Stream:       bulk,
		Conn:         bulk,
		PeerDefault:  bulk,
		ProtocolPeer: map[protocol.ID]rcmgr.ResourceLimits{AllReduceProtocol: bulk},
		Protocol: map[protocol.ID]rcmgr.ResourceLimits{AllReduceProtocol: {
			Memory:  rcmgr.LimitVal64(4 * BulkMemory),
			Streams: 1024,
		}},
		System: rcmgr.ResourceLimits{Memory: rcmgr.LimitVal64(8 * BulkMemory)},
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(partial.Build(base)))
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
