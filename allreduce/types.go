package allreduce

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// DType is the wire format of a round's float32 buffers.
type DType uint8

// Wire formats. Values are part of the wire header: append only.
const (
	Float32  DType = 1 // IEEE 754 binary32, no conversion
	BFloat16 DType = 2 // bfloat16, round to nearest even
	Float16  DType = 3 // IEEE 754 binary16, round to nearest even
	// Int8 and Float4 are block-quantized (quant.go): per block of 64
	// elements a float32 scale and 64 int8 values (1.0625 bytes per
	// element) or 64 4-bit E2M1 floats (0.5625 bytes per element).
	Int8   DType = 4
	Float4 DType = 5
)

// WireLen returns the wire bytes of a chunk of n elements (0 for an
// unknown type).
func (d DType) WireLen(n int) int {
	switch d {
	case Float32:
		return 4 * n
	case BFloat16, Float16:
		return 2 * n
	case Int8:
		return quantWireLen(n, 8)
	case Float4:
		return quantWireLen(n, 4)
	}
	return 0
}

// known reports whether d is a wire format of this version.
func (d DType) known() bool { return d.WireLen(1) > 0 }

// chunkElems is the most elements whose encoding fits in a chunk of
// bytes: whole blocks for the block formats, so that only a segment's
// last chunk ends in a short block.
func (d DType) chunkElems(bytes int) int {
	switch d {
	case Int8, Float4:
		return bytes / d.WireLen(quantBlock) * quantBlock
	case Float32, BFloat16, Float16:
		return bytes / d.WireLen(1)
	}
	return 0
}

func (d DType) String() string {
	switch d {
	case Float32:
		return "float32"
	case BFloat16:
		return "bfloat16"
	case Float16:
		return "float16"
	case Int8:
		return "int8"
	case Float4:
		return "float4"
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// ParseDType parses the names String returns (and "f32", "bf16", "fp16",
// "i8", "fp4", "e2m1").
func ParseDType(s string) (DType, error) {
	switch s {
	case "float32", "f32", "fp32":
		return Float32, nil
	case "bfloat16", "bf16":
		return BFloat16, nil
	case "float16", "f16", "fp16", "half":
		return Float16, nil
	case "int8", "i8":
		return Int8, nil
	case "float4", "fp4", "e2m1":
		return Float4, nil
	}
	return 0, fmt.Errorf("%w: unknown dtype %q (want float32, bfloat16, float16, int8 or float4)", ErrBadOptions, s)
}

// Op is the reduction applied across members.
type Op uint8

// Reduction ops. Values are part of the wire header: append only.
const (
	Sum          Op = 1 // sum of the members' values
	Mean         Op = 2 // sum divided by the number of members
	WeightedMean Op = 3 // sum(w_i x_i) / sum(w_i)
)

func (o Op) String() string {
	switch o {
	case Sum:
		return "sum"
	case Mean:
		return "mean"
	case WeightedMean:
		return "weighted_mean"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// ParseOp parses the names String returns (and "avg", "wmean").
func ParseOp(s string) (Op, error) {
	switch s {
	case "sum":
		return Sum, nil
	case "mean", "avg":
		return Mean, nil
	case "weighted_mean", "weightedmean", "wmean":
		return WeightedMean, nil
	}
	return 0, fmt.Errorf("%w: unknown op %q", ErrBadOptions, s)
}

// Round identifies one all-reduce: a mesh, a training step, a retry attempt,
// the part of the step and the ordered ring. Every member must pass an
// equal Round.
type Round struct {
	Mesh    string
	Step    uint64
	Attempt uint32
	// Part and Parts: a step whose data comes in several buffers (a DDP
	// model's gradient buckets, as backward produces them) reduces each in
	// a round of its own, Part 0..Parts-1 in turn, all with the same
	// Step and Attempt. Zero Parts means 1.
	Part, Parts uint32
	// Offset is Part's first element in the step's whole buffer (0 for a
	// step of one buffer): every member must cut the step alike.
	Offset uint64
	Ring   []peer.ID // the same on every member
	// Links, when set, are the ring members' agreed link rates (aligned
	// with Ring): the round runs PlanRound's order and segments. Without
	// them the ring goes in Ring's order with equal segments.
	Links []Link
}

// MembersHash is SHA-256 over the ordered ring: for each member, its peer ID
// bytes prefixed by their length as a big-endian uint16.
func (r Round) MembersHash() [32]byte {
	h := sha256.New()
	var l [2]byte
	for _, p := range r.Ring {
		binary.BigEndian.PutUint16(l[:], uint16(len(p)))
		h.Write(l[:])
		h.Write([]byte(p))
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// String names the round in logs and errors.
func (r Round) String() string {
	if r.Parts > 1 {
		return fmt.Sprintf("%s/%d.%d part %d/%d", r.Mesh, r.Step, r.Attempt, r.Part, r.Parts)
	}
	return fmt.Sprintf("%s/%d.%d", r.Mesh, r.Step, r.Attempt)
}

// Options say how one AllReduce call reduces.
type Options struct {
	Wire   DType   // wire format; the buffers are always float32
	Op     Op      // reduction
	Weight float64 // this member's weight for WeightedMean (e.g. its sample count); finite, >= 0
	// Progress, when set, counts the payload bytes this member receives in
	// the call, as they arrive: a caller bounds a long round by its
	// progress (no bytes for a while) rather than by its length. Local
	// only: not part of the header, and members may differ.
	Progress *atomic.Int64
}

// Result is what every member learns besides the reduced buffer.
type Result struct {
	// TotalWeight is sum(w_i) for WeightedMean and the member count for
	// Sum and Mean. It is bit-identical on every member.
	TotalWeight float64
}

// Sentinel errors. Callers test with errors.Is.
var (
	ErrBadRound       = errors.New("allreduce: bad round")
	ErrBadOptions     = errors.New("allreduce: bad options")
	ErrBadConfig      = errors.New("allreduce: bad config")
	ErrHeaderMismatch = errors.New("allreduce: header mismatch")
	// ErrSettingsMismatch (always with ErrHeaderMismatch) says members
	// disagree on what no retry changes: element count, wire type, op,
	// chunk size, lane count or protocol version.
	ErrSettingsMismatch = errors.New("allreduce: members disagree on the round's settings")
	ErrAborted          = errors.New("allreduce: round aborted")
	ErrProtocol         = errors.New("allreduce: protocol violation")
	ErrFrameTooLarge    = errors.New("allreduce: frame too large")
	ErrTimeout          = errors.New("allreduce: timed out")
	ErrClosed           = errors.New("allreduce: transport closed")
	ErrZeroTotalWeight  = errors.New("allreduce: total weight is zero")
	ErrPeerUnreachable  = errors.New("allreduce: peer unreachable")
	ErrRoundNotStarted  = errors.New("allreduce: round not started in time")
	ErrTooManyHeld      = errors.New("allreduce: too many held streams")
	ErrBadHeader        = errors.New("allreduce: malformed header")
	ErrUnexpectedStream = errors.New("allreduce: unexpected stream")
)

// PeerError is returned when a round fails because of a peer: a neighbour
// whose stream failed, who rejected the round, or (when a neighbour aborted
// and said why) the member where the failure started.
type PeerError struct {
	Peer  peer.ID
	Round Round
	Err   error
}

func (e *PeerError) Error() string {
	return fmt.Sprintf("allreduce: round %s: peer %s: %v", e.Round, e.Peer, e.Err)
}

func (e *PeerError) Unwrap() error { return e.Err }

// Metrics receives counters from a Reducer. Implementations must be safe
// for concurrent use and must not block.
type Metrics interface {
	// BytesSent counts payload bytes written to a neighbour on lane.
	BytesSent(lane, n int)
	// BytesReceived counts payload bytes read from a neighbour on lane.
	BytesReceived(lane, n int)
	// RoundDone records one AllReduce call of elems elements over a ring
	// of members; err is nil on success.
	RoundDone(d time.Duration, elems, members int, err error)
}

type nopMetrics struct{}

func (nopMetrics) BytesSent(int, int)                       {}
func (nopMetrics) BytesReceived(int, int)                   {}
func (nopMetrics) RoundDone(time.Duration, int, int, error) {}

// NopMetrics returns a Metrics that does nothing.
func NopMetrics() Metrics { return nopMetrics{} }
