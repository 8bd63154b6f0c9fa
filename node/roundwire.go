package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/node/rounds"
)

// RoundProtocol carries the round protocol's messages (node/rounds): a
// stream per peer pair and direction, one frame per message, no replies on
// the same stream. Bulk data goes over /ringmesh/allreduce/1.
// Version 2 replaced version 1's request/reply messages with the
// consensus messages of node/rounds; version 3 added a value's links and
// shares.
const RoundProtocol = "/ringmesh/round/3"

const (
	wireVersion  = 3
	maxMsgBytes  = 64 << 10 // one message
	maxMsgPeers  = 1024     // per list
	msgFixedSize = 1 + 1 + 8 + 8
)

var errBadMsg = errors.New("node: malformed round message")

// Byte layout of a round message (big-endian):
//
//	u32 length of the rest (<= 64 KiB)
//	u8 version (3) | u8 type | u64 epoch | u64 step
//	ballot | accepted ballot
//	u8 flags: bit 0 value follows, bit 1 held follows
//	[value] [held]
//
// ballot: u64 N | id. value: ballot | u16 n, n ids (ring) | u16 n, n ids
// (next) | u16 n, n links (0 or one per ring member: u64 egress, u64
// ingress, bytes/s) | u16 n, n u32 shares (0 or one per next member). id:
// u8 length (0 for none) | peer ID bytes. Trailing bytes are ignored (a
// later version appends fields).
func encodeMsg(m rounds.Message) ([]byte, error) {
	b := make([]byte, 4, 256)
	b = append(b, wireVersion, byte(m.Type))
	b = binary.BigEndian.AppendUint64(b, m.Epoch)
	b = binary.BigEndian.AppendUint64(b, m.Step)
	var err error
	if b, err = appendBallot(b, m.Ballot); err != nil {
		return nil, err
	}
	if b, err = appendBallot(b, m.Accepted); err != nil {
		return nil, err
	}
	var flags byte
	if m.Value != nil {
		flags |= 1
	}
	if m.Held != nil {
		flags |= 2
	}
	b = append(b, flags)
	for _, v := range []*rounds.Value{m.Value, m.Held} {
		if v == nil {
			continue
		}
		if b, err = appendValue(b, *v); err != nil {
			return nil, err
		}
	}
	if len(b)-4 > maxMsgBytes {
		return nil, fmt.Errorf("%w: %d bytes", errBadMsg, len(b)-4)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b, nil
}

func appendID(b []byte, id peer.ID) ([]byte, error) {
	if len(id) > 255 {
		return nil, fmt.Errorf("%w: peer id of %d bytes", errBadMsg, len(id))
	}
	return append(append(b, byte(len(id))), id...), nil
}

func appendBallot(b []byte, x rounds.Ballot) ([]byte, error) {
	return appendID(binary.BigEndian.AppendUint64(b, x.N), x.By)
}

func appendValue(b []byte, v rounds.Value) ([]byte, error) {
	b, err := appendBallot(b, v.Attempt)
	if err != nil {
		return nil, err
	}
	for _, ids := range [][]peer.ID{v.Ring, v.Next} {
		if len(ids) > maxMsgPeers {
			return nil, fmt.Errorf("%w: %d peers", errBadMsg, len(ids))
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(ids)))
		for _, id := range ids {
			if b, err = appendID(b, id); err != nil {
				return nil, err
			}
		}
	}
	if len(v.Links) > maxMsgPeers || len(v.Shares) > maxMsgPeers {
		return nil, fmt.Errorf("%w: %d links, %d shares", errBadMsg, len(v.Links), len(v.Shares))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(v.Links)))
	for _, l := range v.Links {
		b = binary.BigEndian.AppendUint64(b, l.Egress)
		b = binary.BigEndian.AppendUint64(b, l.Ingress)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(v.Shares)))
	for _, x := range v.Shares {
		b = binary.BigEndian.AppendUint32(b, x)
	}
	return b, nil
}

func readMsg(r io.Reader) (rounds.Message, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return rounds.Message{}, err
	}
	n := binary.BigEndian.Uint32(l[:])
	if n < msgFixedSize || n > maxMsgBytes {
		return rounds.Message{}, fmt.Errorf("%w: length %d", errBadMsg, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return rounds.Message{}, fmt.Errorf("%w: %v", errBadMsg, err)
	}
	return decodeMsg(b)
}

// decoder reads fields off a message body; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{errBadMsg}, args...)...)
	}
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || len(d.b) < n {
		d.fail("truncated")
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) u64() uint64 {
	if b := d.bytes(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (d *decoder) u16() int {
	if b := d.bytes(2); b != nil {
		return int(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (d *decoder) id() peer.ID {
	l := d.bytes(1)
	if l == nil || l[0] == 0 {
		return ""
	}
	raw := d.bytes(int(l[0]))
	if raw == nil {
		return ""
	}
	id, err := peer.IDFromBytes(raw)
	if err != nil {
		d.fail("peer id: %v", err)
	}
	return id
}

func (d *decoder) ballot() rounds.Ballot {
	n := d.u64()
	return rounds.Ballot{N: n, By: d.id()}
}

func (d *decoder) ids() []peer.ID {
	n := d.u16()
	if n > maxMsgPeers {
		d.fail("%d peers", n)
		return nil
	}
	out := make([]peer.ID, 0, n)
	for range n {
		id := d.id()
		if d.err != nil {
			return nil
		}
		if id == "" {
			d.fail("empty peer id in a list")
			return nil
		}
		out = append(out, id)
	}
	return out
}

func (d *decoder) value() *rounds.Value {
	v := &rounds.Value{Attempt: d.ballot()}
	v.Ring = d.ids()
	v.Next = d.ids()
	if n := d.u16(); n > 0 {
		if n > maxMsgPeers {
			d.fail("%d links", n)
			return v
		}
		v.Links = make([]rounds.Link, n)
		for i := range v.Links {
			v.Links[i] = rounds.Link{Egress: d.u64(), Ingress: d.u64()}
		}
	}
	if n := d.u16(); n > 0 {
		if n > maxMsgPeers {
			d.fail("%d shares", n)
			return v
		}
		v.Shares = make([]uint32, n)
		for i := range v.Shares {
			if b := d.bytes(4); b != nil {
				v.Shares[i] = binary.BigEndian.Uint32(b)
			}
		}
	}
	return v
}

// decodeMsg decodes a message body (without its length prefix). From and
// To are not on the wire: the receiver sets them from the stream.
func decodeMsg(b []byte) (rounds.Message, error) {
	d := &decoder{b: b}
	head := d.bytes(2)
	if head == nil {
		return rounds.Message{}, d.err
	}
	if head[0] != wireVersion {
		return rounds.Message{}, fmt.Errorf("%w: version %d", errBadMsg, head[0])
	}
	m := rounds.Message{Type: rounds.MsgType(head[1])}
	if m.Type == 0 || m.Type.String() == "unknown" {
		return rounds.Message{}, fmt.Errorf("%w: type %d", errBadMsg, head[1])
	}
	m.Epoch, m.Step = d.u64(), d.u64()
	m.Ballot, m.Accepted = d.ballot(), d.ballot()
	flags := d.bytes(1)
	if d.err == nil && flags[0]&1 != 0 {
		m.Value = d.value()
	}
	if d.err == nil && flags[0]&2 != 0 {
		m.Held = d.value()
	}
	if d.err != nil {
		return rounds.Message{}, d.err
	}
	return m, nil
}
