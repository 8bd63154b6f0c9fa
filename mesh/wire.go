package mesh

import (
	"encoding/binary"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// Wire format constants (see doc.go for the byte layout). Message types are
// append-only.
const (
	wireVersion = 1

	typeHeartbeat    = 1
	typeFailure      = 2
	typeProbeRequest = 3
	typeProbeReply   = 4

	maxPeerIDLen  = 64
	maxAddrs      = 16
	maxAddrLen    = 128
	maxGPUNameLen = 96
	maxGPUUUIDLen = 96

	// maxProbeRequestLen and maxProbeReplyLen are the largest probe
	// messages.
	maxProbeRequestLen = 2 + (1 + maxMeshNameLen) + (1 + maxPeerIDLen)
	maxProbeReplyLen   = 3

	// Probe reply results.
	probeReached    = 1
	probeNotReached = 2

	// maxHeartbeatOverhead is the largest heartbeat without its payload.
	maxHeartbeatOverhead = 2 + (1 + maxMeshNameLen) + (1 + maxPeerIDLen) + 8 + 1 +
		1 + maxAddrs*(1+maxAddrLen) +
		2 + 8 + 1 + maxGPUs*(1+maxGPUNameLen+1+maxGPUUUIDLen+8+1) +
		4
)

// heartbeat is the message a member publishes every HeartbeatInterval.
type heartbeat struct {
	Mesh        string
	Sender      peer.ID
	Incarnation uint64
	State       State
	Addrs       []multiaddr.Multiaddr
	Caps        Capabilities
	Payload     []byte
}

// failureNotice says that Subject, at Incarnation, is suspect, dead or has
// left (Kind). Sender is the member that saw it; for Left, Sender==Subject.
type failureNotice struct {
	Mesh        string
	Sender      peer.ID
	Kind        State
	Subject     peer.ID
	Incarnation uint64
}

// probeRequest asks a helper to probe Target for the requester (the
// stream's authenticated remote peer).
type probeRequest struct {
	Mesh   string
	Target peer.ID
}

// encodeHeartbeat appends the wire form of h to b. Fields over the wire
// limits are truncated (addresses, GPUs) or rejected (payload, names).
func encodeHeartbeat(b []byte, h *heartbeat) ([]byte, error) {
	if len(h.Payload) > maxPayloadCap {
		return nil, fmt.Errorf("encode heartbeat: %w", ErrPayloadTooLarge)
	}
	b = append(b, wireVersion, typeHeartbeat)
	var err error
	if b, err = putString8(b, h.Mesh, maxMeshNameLen); err != nil {
		return nil, fmt.Errorf("encode heartbeat mesh: %w", err)
	}
	if b, err = putString8(b, string(h.Sender), maxPeerIDLen); err != nil {
		return nil, fmt.Errorf("encode heartbeat sender: %w", err)
	}
	b = binary.BigEndian.AppendUint64(b, h.Incarnation)
	b = append(b, byte(h.State))
	var addrs [][]byte
	for _, a := range h.Addrs {
		if ab := a.Bytes(); len(ab) > 0 && len(ab) <= maxAddrLen && len(addrs) < maxAddrs {
			addrs = append(addrs, ab)
		}
	}
	b = append(b, byte(len(addrs)))
	for _, a := range addrs {
		b = append(b, byte(len(a)))
		b = append(b, a...)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(min(h.Caps.CPUs, 0xffff)))
	b = binary.BigEndian.AppendUint64(b, h.Caps.MemoryBytes)
	gpus := h.Caps.GPUs[:min(len(h.Caps.GPUs), maxGPUs)]
	b = append(b, byte(len(gpus)))
	for _, g := range gpus {
		b, _ = putString8(b, truncate(g.Name, maxGPUNameLen), maxGPUNameLen)
		b, _ = putString8(b, truncate(g.UUID, maxGPUUUIDLen), maxGPUUUIDLen)
		b = binary.BigEndian.AppendUint64(b, g.MemoryBytes)
		b = append(b, byte(min(max(g.UtilizationPct, 0), 100)))
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(h.Payload)))
	return append(b, h.Payload...), nil
}

// decodeHeartbeat parses a heartbeat. Every length is checked against its
// limit before anything is allocated; trailing bytes are an error.
func decodeHeartbeat(b []byte) (*heartbeat, error) {
	r := reader{b: b}
	r.header(typeHeartbeat)
	h := &heartbeat{}
	h.Mesh = r.string8(maxMeshNameLen, "mesh")
	h.Sender = r.peerID("sender")
	h.Incarnation = r.u64()
	h.State = State(r.u8())
	if r.err == nil && !h.State.valid() {
		r.fail("state %d", h.State)
	}
	n := r.count(maxAddrs, "addrs")
	for i := 0; i < n && r.err == nil; i++ {
		ab := r.bytes8(maxAddrLen, "addr")
		if r.err != nil {
			break
		}
		a, err := multiaddr.NewMultiaddrBytes(ab)
		if err != nil {
			r.fail("addr %d: %v", i, err)
			break
		}
		h.Addrs = append(h.Addrs, a)
	}
	h.Caps.CPUs = int(r.u16())
	h.Caps.MemoryBytes = r.u64()
	n = r.count(maxGPUs, "gpus")
	for i := 0; i < n && r.err == nil; i++ {
		var g GPU
		g.Name = r.string8(maxGPUNameLen, "gpu name")
		g.UUID = r.string8(maxGPUUUIDLen, "gpu uuid")
		g.MemoryBytes = r.u64()
		g.UtilizationPct = int(r.u8())
		if r.err == nil && g.UtilizationPct > 100 {
			r.fail("gpu utilization %d", g.UtilizationPct)
		}
		h.Caps.GPUs = append(h.Caps.GPUs, g)
	}
	h.Payload = r.bytes32(maxPayloadCap, "payload")
	if err := r.done(); err != nil {
		return nil, err
	}
	return h, nil
}

// encodeFailure appends the wire form of f to b.
func encodeFailure(b []byte, f *failureNotice) ([]byte, error) {
	b = append(b, wireVersion, typeFailure)
	var err error
	if b, err = putString8(b, f.Mesh, maxMeshNameLen); err != nil {
		return nil, fmt.Errorf("encode failure mesh: %w", err)
	}
	if b, err = putString8(b, string(f.Sender), maxPeerIDLen); err != nil {
		return nil, fmt.Errorf("encode failure sender: %w", err)
	}
	b = append(b, byte(f.Kind))
	if b, err = putString8(b, string(f.Subject), maxPeerIDLen); err != nil {
		return nil, fmt.Errorf("encode failure subject: %w", err)
	}
	return binary.BigEndian.AppendUint64(b, f.Incarnation), nil
}

// decodeFailure parses a failure notice.
func decodeFailure(b []byte) (*failureNotice, error) {
	r := reader{b: b}
	r.header(typeFailure)
	f := &failureNotice{}
	f.Mesh = r.string8(maxMeshNameLen, "mesh")
	f.Sender = r.peerID("sender")
	f.Kind = State(r.u8())
	if r.err == nil && f.Kind != Suspect && f.Kind != Dead && f.Kind != Left {
		r.fail("failure kind %d", f.Kind)
	}
	f.Subject = r.peerID("subject")
	f.Incarnation = r.u64()
	if err := r.done(); err != nil {
		return nil, err
	}
	return f, nil
}

// encodeProbeRequest appends the wire form of q to b.
func encodeProbeRequest(b []byte, q *probeRequest) ([]byte, error) {
	b = append(b, wireVersion, typeProbeRequest)
	var err error
	if b, err = putString8(b, q.Mesh, maxMeshNameLen); err != nil {
		return nil, fmt.Errorf("encode probe request mesh: %w", err)
	}
	if b, err = putString8(b, string(q.Target), maxPeerIDLen); err != nil {
		return nil, fmt.Errorf("encode probe request target: %w", err)
	}
	return b, nil
}

// decodeProbeRequest parses a probe request.
func decodeProbeRequest(b []byte) (*probeRequest, error) {
	r := reader{b: b}
	r.header(typeProbeRequest)
	q := &probeRequest{}
	q.Mesh = r.string8(maxMeshNameLen, "mesh")
	q.Target = r.peerID("target")
	if err := r.done(); err != nil {
		return nil, err
	}
	return q, nil
}

// encodeProbeReply appends the wire form of a probe reply to b.
func encodeProbeReply(b []byte, reached bool) []byte {
	res := byte(probeNotReached)
	if reached {
		res = probeReached
	}
	return append(b, wireVersion, typeProbeReply, res)
}

// decodeProbeReply parses a probe reply: whether the helper reached the
// target.
func decodeProbeReply(b []byte) (bool, error) {
	r := reader{b: b}
	r.header(typeProbeReply)
	res := r.u8()
	if r.err == nil && res != probeReached && res != probeNotReached {
		r.fail("probe result %d", res)
	}
	if err := r.done(); err != nil {
		return false, err
	}
	return res == probeReached, nil
}

func putString8(b []byte, s string, limit int) ([]byte, error) {
	if len(s) == 0 || len(s) > limit {
		return nil, fmt.Errorf("field length %d not in 1-%d", len(s), limit)
	}
	b = append(b, byte(len(s)))
	return append(b, s...), nil
}

// reader is a bounds-checked cursor; the first error sticks and turns every
// later read into a no-op returning zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrDecode, fmt.Sprintf(format, args...))
	}
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.fail("%s: need %d bytes, have %d", what, n, len(r.b))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if v := r.take(1, "u8"); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.take(2, "u16"); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.take(4, "u32"); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if v := r.take(8, "u64"); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (r *reader) header(typ byte) {
	if v := r.u8(); r.err == nil && v != wireVersion {
		r.fail("version %d", v)
	}
	if v := r.u8(); r.err == nil && v != typ {
		r.fail("type %d, want %d", v, typ)
	}
}

func (r *reader) count(limit int, what string) int {
	n := int(r.u8())
	if r.err == nil && n > limit {
		r.fail("%s: count %d over %d", what, n, limit)
		return 0
	}
	return n
}

// bytes8 reads a u8-length-prefixed, non-empty field of at most limit bytes.
func (r *reader) bytes8(limit int, what string) []byte {
	n := int(r.u8())
	if r.err == nil && (n == 0 || n > limit) {
		r.fail("%s: length %d not in 1-%d", what, n, limit)
		return nil
	}
	return r.take(n, what)
}

func (r *reader) string8(limit int, what string) string {
	return string(r.bytes8(limit, what))
}

func (r *reader) bytes32(limit int, what string) []byte {
	n := r.u32()
	if r.err == nil && n > uint32(limit) {
		r.fail("%s: length %d over %d", what, n, limit)
		return nil
	}
	v := r.take(int(n), what)
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

func (r *reader) peerID(what string) peer.ID {
	b := r.bytes8(maxPeerIDLen, what)
	if r.err != nil {
		return ""
	}
	id, err := peer.IDFromBytes(b)
	if err != nil {
		r.fail("%s: %v", what, err)
		return ""
	}
	return id
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	return r.err
}
