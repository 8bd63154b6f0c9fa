// Package allreduce owns the ring all-reduce: the pure schedule that says
// which chunk goes where at each step, the reduce kernels and wire-format
// conversions, the round protocol (header handshake, frames, abort
// notices), and two Transports: StreamTransport over libp2p streams
// (ProtocolID, /ringmesh/allreduce/2) and MemNetwork, in memory with fault
// hooks, for tests. It knows nothing of membership: callers hand it the
// ordered ring and a round id (Round) and get back the reduced buffer or a
// *PeerError naming the peer the round failed on.
//
// # Algorithm
//
// The buffer is cut into Config.Lanes contiguous lanes; even lanes go
// clockwise round the ring, odd lanes counter-clockwise, so both
// directions of every link carry data. Each lane is a classic ring
// reduce-scatter then all-gather over n segments (see schedule.go), every
// segment cut into chunks of Config.ChunkBytes wire bytes. A member
// forwards each chunk as soon as it has reduced it, so sending, receiving
// and reducing overlap. Each element is finished once, by one member, and
// then copied; with a wire format other than float32 the finishing member
// stores the value as decoded from the wire bytes it sends, and the
// all-gather forwards those bytes verbatim, so every member ends with
// bit-identical results. Partial sums travel in the wire format: a
// reduce-scatter hop decodes a chunk to float32, adds its own
// contribution and encodes the sum again (for the block formats int8 and
// float4 a new scale per block at every hop). The bfloat16
// conversions run 8 elements per instruction on amd64 with AVX2
// (bf16_amd64.s; the scalar loops in kernels.go are the reference and the
// fallback, -tags purego forces them).
//
// # Plans for mixed links
//
// A Round may carry its members' link rates (Round.Links, agreed by the
// caller). PlanRound turns them into the round's Plan: the ring goes from
// the slowest link to the fastest, and segments are sized per direction so
// that a member behind a slow link, and its successor, finish large
// segments: such a member then sends about S bytes instead of 2S(n-1)/n,
// and the round approaches the bound S/min(egress). The plan is a pure,
// integer-only function of the links, so every member computes the same
// one; the header carries its hash (plan.go). Without links, or with all
// links alike, the plan is the classic ring: Round.Ring's order and equal
// segments.
//
// Members must agree on the element count, wire type, op, chunk size and
// lane count: a disagreement in any of these is ErrSettingsMismatch on
// every member (no retry can fix it), while a disagreement on the round's
// identity (step, attempt, members) is a plain ErrHeaderMismatch that the
// caller may retry.
//
// Sum adds; Mean multiplies the finished sum by 1/n; WeightedMean scales
// each member's contribution by its weight w_i and the finished sum by
// 1/sum(w), where every member first learns every weight round lane 0 and
// sums them in ring order (so the total is bit-identical everywhere).
//
// # Wire protocol
//
// Every round opens one stream per lane per ring edge, from the lane's
// sender to its receiver. Integers are big-endian. The sender writes the
// header:
//
//	off  len  field
//	0    4    magic "RMAR"
//	4    1    version (5)
//	5    1    dtype: 1 float32, 2 bfloat16, 3 float16, 4 int8, 5 float4
//	6    1    op: 1 sum, 2 mean, 3 weighted mean
//	7    1    lane
//	8    1    lanes
//	9    1    mesh name length m (<= 128)
//	10   8    step
//	18   4    attempt
//	22   8    element count of the whole buffer
//	30   4    chunk bytes
//	34   32   members hash: SHA-256 over the ring, each peer ID as u16
//	          length + bytes (Round.MembersHash)
//	66   32   schedule hash: Plan.Hash of the round's plan
//	98   4    part: which of the step's buffers (Round.Part)
//	102  4    parts: how many buffers the step has (Round.Parts, >= 1)
//	106  1    flags: bit 0 trusted network (Config.TrustedNetwork)
//	107  8    part offset: the part's first element in the step's whole
//	          buffer (Round.Offset; 0 for a step of one buffer)
//	115  m    mesh name
//
// The receiver holds an inbound stream until its own AllReduce for that
// (step, attempt, part, lane) starts (at most HoldTimeout, at most MaxHeld
// streams), compares every field with the header it expects and answers
// with one control message:
//
//	ack     [1]
//	reject  [2][code u8][u16 len][reason]   code: 1 header mismatch (the
//	        reason names the field), 2 round not started, 3 busy,
//	        4 closing, 5 settings mismatch (a field no retry changes:
//	        version, dtype, op, count, chunk bytes, lanes, schedule hash,
//	        parts, part offset, flags)
//	abort   [3][cause u8][u16 len][origin peer ID][u16 len][reason]
//	        cause: 0 peer failure, 1 header mismatch, 2 zero total
//	        weight, 3 settings mismatch
//
// Right after an ack the receiver writes a lane message (StreamTransport
// only; direct.go has the exchange):
//
//	lane    [4][mode u8]   mode 0: stay on this stream; mode 1 (offer):
//	        [port u16][token 32]: connect to that port on the IP this
//	        stream's connection reached, write "RMLN" and the token, run
//	        libp2p's TLS as client (not under trusted network), then
//	        write one byte here: 'D' (the lane runs on the connection;
//	        the stream is closed) or 'S' (it stays on this stream)
//
// After that the sender writes frames (on the stream or the connection), each a u32 length then the
// payload; the receiver knows every frame's exact length from the schedule
// and rejects any other length before reading the payload (and never
// allocates from a length: the cap is MaxChunkBytes). For WeightedMean,
// lane 0 first carries n-1 weight frames (8 bytes, float64 bits). Then
// come the chunks in schedule order: elements little-endian, float32 (4
// bytes) or bfloat16/float16 (2 bytes); int8 and float4 chunks are blocks
// of 64 elements counted from the chunk's start (the last may be
// shorter), each a float32 scale then one int8 or two 4-bit E2M1 codes a
// byte (quant.go has the layout, the rounding and what a NaN or an
// infinity does). A chunk holds as many elements as fit in ChunkBytes,
// whole blocks for the block formats.
//
// On success the sender closes its write side after the last frame and
// waits for the receiver's EOF; the receiver reads the sender's EOF and
// then closes its own write side. While the round runs the receiver's
// write direction is otherwise idle, so a member that aborts sends an
// abort message up every inbound stream (naming the member where the
// failure began) and closes them, then resets its outbound streams. Its
// neighbours abort in turn, so every member returns promptly; settle.go
// says how a member decides whom to blame. Control message and reject or
// abort code values are append only.
//
// Every read and write has a deadline (FrameTimeout per frame,
// StartTimeout for the handshake) and every stream is reset when the
// call's context ends, so no call can hang.
package allreduce
