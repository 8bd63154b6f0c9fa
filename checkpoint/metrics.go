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
	// ("malformed", "forged", "conflicting").
	AnnouncementRejected(reason string)
	// ReplicationStarted counts background pulls started by the Replicator.
	ReplicationStarted()
	// CheckpointRefused counts a checkpoint not fetched or replicated, by
	// reason: "no_space" (it does not fit in the store's free space;
	// nothing was allocated), "untrusted" (the Replicator's Trust hook
	// refused every provider; nothing was requested).
	CheckpointRefused(reason string)
}

// AnnouncementRejections and Refusals list the reasons given to
// Metrics.AnnouncementRejected and Metrics.CheckpointRefused.
var (
	AnnouncementRejections = []string{"malformed", "forged", "conflicting"}
	Refusals               = []string{"no_space", "untrusted"}
)

// NopMetrics discards everything.
type NopMetrics struct{}

func (NopMetrics) ChunkServed(int)             {}
func (NopMetrics) ChunkFetched(peer.ID, int)   {}
func (NopMetrics) BadChunk(peer.ID)            {}
func (NopMetrics) AnnouncementRejected(string) {}
func (NopMetrics) ReplicationStarted()         {}
func (NopMetrics) CheckpointRefused(string)    {}

var _ Metrics = NopMetrics{}

func orNop(m Metrics) Metrics {
	if m == nil {
		return NopMetrics{}
	}
	return m
}
