package checkpoint

import "github.com/libp2p/go-libp2p/core/peer"

// Metrics receives the package's counters. node implements it with
// Prometheus (ringmesh_checkpoint_*). Implementations must be safe for
// concurrent use and must not block.
type Metrics interface {
	// ChunkServed counts a chunk of n bytes sent by the Server.
	ChunkServed(n int)
	// ChunkFetched counts a verified chunk of n bytes received from p.
	ChunkFetched(p peer.ID, n int)
	// BadChunk counts a chunk from p that failed verification.
	BadChunk(p peer.ID)
	// AnnouncementRejected counts a dropped announcement by reason
	// ("malformed", "forged").
	AnnouncementRejected(reason string)
	// ReplicationStarted counts background pulls started by the Replicator.
	ReplicationStarted()
}

// NopMetrics discards everything.
type NopMetrics struct{}

func (NopMetrics) ChunkServed(int)             {}
func (NopMetrics) ChunkFetched(peer.ID, int)   {}
func (NopMetrics) BadChunk(peer.ID)            {}
func (NopMetrics) AnnouncementRejected(string) {}
func (NopMetrics) ReplicationStarted()         {}

var _ Metrics = NopMetrics{}

func orNop(m Metrics) Metrics {
	if m == nil {
		return NopMetrics{}
	}
	return m
}
