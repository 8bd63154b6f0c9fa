package rounds

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// MsgType is the kind of a round message. Values are on the wire: append
// only.
type MsgType uint8

// Round messages.
const (
	MsgOffer    MsgType = 1  // member -> list: my trainer submitted Step
	MsgPrepare  MsgType = 2  // proposer -> list: phase 1 of (Step, Ballot)
	MsgPromise  MsgType = 3  // acceptor -> proposer: Accepted, Value (if any)
	MsgNack     MsgType = 4  // acceptor -> proposer: Ballot = the higher one promised
	MsgStart    MsgType = 5  // proposer -> ring: all-reduce (Step, Ballot) over Value.Ring
	MsgReady    MsgType = 6  // ring member -> proposer: I hold the result of (Step, Ballot)
	MsgFailed   MsgType = 7  // ring member -> proposer: my all-reduce of (Step, Ballot) failed
	MsgAccept   MsgType = 8  // proposer -> list: phase 2 of (Step, Ballot, Value)
	MsgAccepted MsgType = 9  // acceptor -> proposer
	MsgCommit   MsgType = 10 // -> list and Next: Step decided Value
	MsgAhead    MsgType = 11 // member -> stale member: I am at Step and no longer hold yours
	MsgSync     MsgType = 12 // member -> member at a later step: tell me how my Step ended
	MsgJoin     MsgType = 13 // non-member -> training member: admit me
	MsgFormed   MsgType = 14 // member -> forming peer it formed with: you are in Value.Next at Step
	msgTypeEnd  MsgType = 15
)

var msgNames = [...]string{"", "offer", "prepare", "promise", "nack", "start", "ready", "failed",
	"accept", "accepted", "commit", "ahead", "sync", "join", "formed"}

func (t MsgType) String() string {
	if t > 0 && t < msgTypeEnd {
		return msgNames[t]
	}
	return "unknown"
}

// Message is one round message. From is set by the sender and checked by
// the transport (it is the authenticated remote peer); To is the receiver.
type Message struct {
	Type     MsgType
	From, To ID
	Epoch    uint64
	Step     uint64
	Ballot   Ballot
	Accepted Ballot // promise: the ballot of Value, zero when none
	Value    *Value // promise (accepted value), start, accept, commit
	Held     *Value // promise, failed: the attempt whose result the sender holds
}

// The byte layout of a message (big-endian), which node frames with a u32
// length on its /ringmesh/round stream:
//
//	u8 version (3) | u8 type | u64 epoch | u64 step
//	ballot | accepted ballot
//	u8 flags: bit 0 value follows, bit 1 held follows
//	[value] [held]
//
// ballot: u64 N | id. value: ballot | u16 n, n ids (ring) | u16 n, n ids
// (next) | u16 n, n links (0 or one per ring member: u64 egress, u64
// ingress, bytes/s) | u16 n, n u32 shares (0 or one per next member). id:
// u8 length (0 for none) | peer ID bytes. Trailing bytes are ignored (a
// later version appends fields). From and To are not on the wire: the
// receiver sets them from the stream.
const (
	msgVersion = 3
	// MinMessageSize and MaxMessageSize bound an encoded message: the
	// fixed fields, and 64 KiB.
	MinMessageSize = 1 + 1 + 8 + 8
	MaxMessageSize = 64 << 10
)

// maxList bounds a list or ring carried in a value, on the wire too.
const maxList = 1024

// ErrMalformed is wrapped by every decoding error: the bytes do not hold
// a message (or a durable state) of this layout.
var ErrMalformed = errors.New("rounds: malformed")

// AppendMessage appends the encoding of m to b. It fails on what the
// layout cannot hold: a peer ID over 255 bytes, a list over 1,024 peers,
// a message over MaxMessageSize.
func AppendMessage(b []byte, m Message) ([]byte, error) {
	start := len(b)
	b = append(b, msgVersion, byte(m.Type))
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
	for _, v := range []*Value{m.Value, m.Held} {
		if v == nil {
			continue
		}
		if b, err = appendValue(b, *v); err != nil {
			return nil, err
		}
	}
	if n := len(b) - start; n > MaxMessageSize {
		return nil, fmt.Errorf("rounds: message of %d bytes, at most %d", n, MaxMessageSize)
	}
	return b, nil
}

// DecodeMessage decodes a message that AppendMessage encoded. An error
// wraps ErrMalformed.
func DecodeMessage(b []byte) (Message, error) {
	if len(b) > MaxMessageSize {
		return Message{}, fmt.Errorf("%w message: %d bytes, at most %d", ErrMalformed, len(b), MaxMessageSize)
	}
	d := &decoder{b: b, what: "message"}
	head := d.bytes(2)
	if head == nil {
		return Message{}, d.err
	}
	if head[0] != msgVersion {
		return Message{}, fmt.Errorf("%w message: version %d", ErrMalformed, head[0])
	}
	m := Message{Type: MsgType(head[1])}
	if m.Type == 0 || m.Type.String() == "unknown" {
		return Message{}, fmt.Errorf("%w message: type %d", ErrMalformed, head[1])
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
		return Message{}, d.err
	}
	return m, nil
}

func appendID(b []byte, id ID) ([]byte, error) {
	if len(id) > 255 {
		return nil, fmt.Errorf("rounds: peer id of %d bytes, at most 255", len(id))
	}
	return append(append(b, byte(len(id))), id...), nil
}

func appendBallot(b []byte, x Ballot) ([]byte, error) {
	return appendID(binary.BigEndian.AppendUint64(b, x.N), x.By)
}

func appendValue(b []byte, v Value) ([]byte, error) {
	b, err := appendBallot(b, v.Attempt)
	if err != nil {
		return nil, err
	}
	for _, ids := range [][]ID{v.Ring, v.Next} {
		if len(ids) > maxList {
			return nil, fmt.Errorf("rounds: list of %d peers, at most %d", len(ids), maxList)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(ids)))
		for _, id := range ids {
			if b, err = appendID(b, id); err != nil {
				return nil, err
			}
		}
	}
	if len(v.Links) > maxList || len(v.Shares) > maxList {
		return nil, fmt.Errorf("rounds: %d links, %d shares, at most %d", len(v.Links), len(v.Shares), maxList)
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

// decoder reads fields off an encoding; the first error sticks.
type decoder struct {
	b    []byte
	what string // "message", "durable state": what the error says is malformed
	err  error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w %s: %s", ErrMalformed, d.what, fmt.Sprintf(format, args...))
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

func (d *decoder) id() ID {
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

func (d *decoder) ballot() Ballot {
	n := d.u64()
	return Ballot{N: n, By: d.id()}
}

func (d *decoder) ids() []ID {
	n := d.u16()
	if n > maxList {
		d.fail("%d peers, at most %d", n, maxList)
		return nil
	}
	out := make([]ID, 0, n)
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

func (d *decoder) value() *Value {
	v := &Value{Attempt: d.ballot()}
	v.Ring = d.ids()
	v.Next = d.ids()
	if n := d.u16(); n > 0 {
		if n > maxList {
			d.fail("%d links, at most %d", n, maxList)
			return v
		}
		v.Links = make([]Link, n)
		for i := range v.Links {
			v.Links[i] = Link{Egress: d.u64(), Ingress: d.u64()}
		}
	}
	if n := d.u16(); n > 0 {
		if n > maxList {
			d.fail("%d shares, at most %d", n, maxList)
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
