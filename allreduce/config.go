package allreduce

import (
	"fmt"
	"time"
)

// Limits fixed by the protocol.
const (
	// MaxChunkBytes caps a data frame; a longer length prefix is rejected
	// before anything is allocated.
	MaxChunkBytes = 64 << 20
	// MinChunkBytes is the smallest chunk size allowed.
	MinChunkBytes = 1 << 10
	// MaxLanes caps the number of parallel streams a round uses.
	MaxLanes = 16
	// MaxMeshLen caps the mesh name carried in the header.
	MaxMeshLen = 128
	// MaxRingSize caps the members of one ring.
	MaxRingSize = 4096
)

// Config tunes a Reducer and its transports. Build it from DefaultConfig or
// LocalConfig and change fields; zero values are errors, never defaults.
type Config struct {
	// ChunkBytes is the wire size of one data frame (at most: the block
	// formats fill it with whole blocks). Smaller chunks start
	// the pipeline sooner and overlap send/receive/reduce more finely;
	// larger ones cost fewer frames and deadline updates. Every member of a
	// round must use the same value (it is in the header). Default 1 MiB;
	// MinChunkBytes..MaxChunkBytes, a multiple of 4.
	ChunkBytes int

	// Lanes is the number of parallel streams per round. The buffer is cut
	// into Lanes contiguous parts; even lanes go clockwise round the ring,
	// odd lanes counter-clockwise, so both directions of every link carry
	// data and every neighbour can be told why a round aborted. Must match
	// on every member (it is in the header). Default 2; 1..MaxLanes.
	Lanes int

	// FrameTimeout bounds the wait for any single frame read or write once
	// a round is running. A dead or wedged neighbour is detected after at
	// most this long even without a stream reset. Default 30 s; must cover
	// one ChunkBytes frame at the slowest link rate.
	FrameTimeout time.Duration

	// StartTimeout bounds how long a member waits for a neighbour to join
	// the round (the neighbour's AllReduce call to start and accept the
	// stream). It covers the spread of start times between members.
	// Default 60 s.
	StartTimeout time.Duration

	// HoldTimeout is how long an inbound stream for a round this node has
	// not started yet is held before it is rejected. Should be at least
	// StartTimeout. Default 60 s.
	HoldTimeout time.Duration

	// MaxHeld caps the inbound streams held for rounds not started yet;
	// more are rejected. Default 64.
	MaxHeld int

	// NoticeGrace is how long a member whose neighbour's stream failed
	// waits for an abort notice naming the member where the failure began
	// before it blames the neighbour. Default 250 ms.
	NoticeGrace time.Duration

	// DirectLanes gives every lane of at least DirectMinBytes its own TCP
	// connection, set up over the lane's libp2p stream and secured with
	// libp2p's TLS bound to both peer IDs: no muxer and no second cipher
	// (a private mesh's XSalsa20) on the bulk path. Where no direct
	// connection can be made (a relayed connection, a port the network
	// drops) the lane stays on the libp2p stream and says so (LaneStats).
	// Default true.
	DirectLanes bool

	// DirectMinBytes is the smallest lane (its part of the buffer, in wire
	// bytes) that gets a direct connection; smaller ones stay on the
	// stream, where a round costs no TCP or TLS handshake. Default 1 MiB;
	// 0 upgrades every lane.
	DirectMinBytes int

	// TrustedNetwork makes direct lanes carry plaintext, for isolated
	// cluster fabrics (as gloo and NCCL do): a lane connection is still
	// authenticated at setup by a one-time token sent over the secure
	// libp2p stream; the control plane, gossip and checkpoints stay
	// encrypted. Every member must agree (it is in the header; a
	// difference fails the round with ErrSettingsMismatch). Requires
	// DirectLanes. Default false.
	TrustedNetwork bool
}

// headerFlags are the Header flags this config sets.
func (c Config) headerFlags() uint8 {
	if c.TrustedNetwork {
		return FlagTrustedNetwork
	}
	return 0
}

// DefaultConfig returns the production settings.
func DefaultConfig() Config {
	return Config{
		ChunkBytes:   1 << 20,
		Lanes:        2,
		FrameTimeout: 30 * time.Second,
		StartTimeout: 60 * time.Second,
		HoldTimeout:  60 * time.Second,
		MaxHeld:      64,
		NoticeGrace:  250 * time.Millisecond,

		DirectLanes:    true,
		DirectMinBytes: 1 << 20,
	}
}

// LocalConfig returns settings for tests on one machine: small chunks so
// small buffers still pipeline, every lane on a direct connection, and
// timeouts short enough that a failing
// test fails fast yet generous for a loaded machine running -race.
func LocalConfig() Config {
	c := DefaultConfig()
	c.ChunkBytes = 4 << 10
	c.FrameTimeout = 20 * time.Second
	c.StartTimeout = 20 * time.Second
	c.HoldTimeout = 20 * time.Second
	c.NoticeGrace = 500 * time.Millisecond
	c.DirectMinBytes = 0 // every lane takes the direct path
	return c
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.ChunkBytes < MinChunkBytes || c.ChunkBytes > MaxChunkBytes || c.ChunkBytes%4 != 0:
		return fmt.Errorf("%w: ChunkBytes %d not a multiple of 4 in [%d, %d]", ErrBadConfig, c.ChunkBytes, MinChunkBytes, MaxChunkBytes)
	case c.Lanes < 1 || c.Lanes > MaxLanes:
		return fmt.Errorf("%w: Lanes %d not in [1, %d]", ErrBadConfig, c.Lanes, MaxLanes)
	case c.FrameTimeout <= 0:
		return fmt.Errorf("%w: FrameTimeout %v must be positive", ErrBadConfig, c.FrameTimeout)
	case c.StartTimeout <= 0:
		return fmt.Errorf("%w: StartTimeout %v must be positive", ErrBadConfig, c.StartTimeout)
	case c.HoldTimeout <= 0:
		return fmt.Errorf("%w: HoldTimeout %v must be positive", ErrBadConfig, c.HoldTimeout)
	case c.MaxHeld < 1:
		return fmt.Errorf("%w: MaxHeld %d must be at least 1", ErrBadConfig, c.MaxHeld)
	case c.NoticeGrace < 0:
		return fmt.Errorf("%w: NoticeGrace %v must not be negative", ErrBadConfig, c.NoticeGrace)
	case c.DirectMinBytes < 0:
		return fmt.Errorf("%w: DirectMinBytes %d must not be negative", ErrBadConfig, c.DirectMinBytes)
	case c.TrustedNetwork && !c.DirectLanes:
		return fmt.Errorf("%w: TrustedNetwork needs DirectLanes (plaintext is only ever sent on direct lanes)", ErrBadConfig)
	}
	return nil
}
