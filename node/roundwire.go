package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/peer"
)

// RoundProtocol carries the small control messages of training rounds
// (ready, commit, status, join). Bulk data goes over /ringmesh/allreduce/1.
const RoundProtocol = "/ringmesh/round/1"

// Round control message types. Append only.
const (
	msgReady      uint8 = 1 // member -> leader: I hold the result of (step, ring)
	msgCommit     uint8 = 2 // leader -> members: apply (step, ring); Peers = next list
	msgStatusReq  uint8 = 3 // recovering member -> member: what do you know of step?
	msgStatusResp uint8 = 4 // Flags: applied, hasResult; Peers = next list if applied
	msgJoinReq    uint8 = 5 // joiner -> member: admit me
	msgJoinResp   uint8 = 6 // Flags: admitted; Step = entry step; Peers = list at entry
	msgAck        uint8 = 7 // Flags: ok; Reason when not
	msgAbort      uint8 = 8 // member -> ring: (step, ring) can never commit; run again
)

// Status flags.
const (
	flagApplied   uint8 = 1 << 0 // status: the step was applied; join: admitted; ack: ok
	flagHasResult uint8 = 1 << 1 // status: holds the full result of (step, ring)
)

const (
	wireVersion   = 1
	maxMsgBytes   = 64 << 10 // one control message
	maxMsgPeers   = 1024
	maxReasonLen  = 512
	msgHeaderSize = 1 + 1 + 8 + 32 + 1 + 2 // version, type, step, ring, flags, npeers
)

var errBadMsg = errors.New("node: malformed round message")

// msg is one round control message. Byte layout (big-endian):
//
//	u32 length of the rest (<= maxMsgBytes)
//	u8 version (1) | u8 type | u64 step | [32]byte ring hash | u8 flags
//	u16 npeers (<= maxMsgPeers), then per peer: u8 len | ID bytes | u64 incarnation
//	u16 reason length (<= maxReasonLen) | reason bytes (UTF-8)
type msg struct {
	Type   uint8
	Step   uint64
	Ring   [32]byte
	Flags  uint8
	Peers  []member
	Reason string
}

// member is one entry of an agreed member list: a peer at one incarnation (a
// restarted node has a higher incarnation and is a new member).
type member struct {
	ID  peer.ID
	Inc uint64
}

func (m *msg) encode() ([]byte, error) {
	if len(m.Peers) > maxMsgPeers {
		return nil, fmt.Errorf("%w: %d peers", errBadMsg, len(m.Peers))
	}
	reason := m.Reason
	if len(reason) > maxReasonLen {
		reason = reason[:maxReasonLen]
	}
	b := make([]byte, 4, 4+msgHeaderSize+len(m.Peers)*48+2+len(reason))
	b = append(b, wireVersion, m.Type)
	b = binary.BigEndian.AppendUint64(b, m.Step)
	b = append(b, m.Ring[:]...)
	b = append(b, m.Flags)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Peers)))
	for _, p := range m.Peers {
		if len(p.ID) == 0 || len(p.ID) > 255 {
			return nil, fmt.Errorf("%w: peer id of %d bytes", errBadMsg, len(p.ID))
		}
		b = append(b, byte(len(p.ID)))
		b = append(b, p.ID...)
		b = binary.BigEndian.AppendUint64(b, p.Inc)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(reason)))
	b = append(b, reason...)
	if len(b)-4 > maxMsgBytes {
		return nil, fmt.Errorf("%w: %d bytes", errBadMsg, len(b)-4)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b, nil
}

func writeMsg(w io.Writer, m *msg) error {
	b, err := m.encode()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func readMsg(r io.Reader) (*msg, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(l[:])
	if n < msgHeaderSize+2 || n > maxMsgBytes {
		return nil, fmt.Errorf("%w: length %d", errBadMsg, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadMsg, err)
	}
	return decodeMsg(b)
}

// decodeMsg decodes a message body (without its length prefix).
func decodeMsg(b []byte) (*msg, error) {
	if len(b) < msgHeaderSize+2 {
		return nil, fmt.Errorf("%w: %d bytes", errBadMsg, len(b))
	}
	if b[0] != wireVersion {
		return nil, fmt.Errorf("%w: version %d", errBadMsg, b[0])
	}
	m := &msg{Type: b[1], Step: binary.BigEndian.Uint64(b[2:10]), Flags: b[42]}
	if m.Type < msgReady || m.Type > msgAbort {
		return nil, fmt.Errorf("%w: type %d", errBadMsg, m.Type)
	}
	copy(m.Ring[:], b[10:42])
	np := int(binary.BigEndian.Uint16(b[43:45]))
	if np > maxMsgPeers {
		return nil, fmt.Errorf("%w: %d peers", errBadMsg, np)
	}
	rest := b[45:]
	for i := 0; i < np; i++ {
		if len(rest) < 1 || len(rest) < 1+int(rest[0])+8 {
			return nil, fmt.Errorf("%w: truncated peer list", errBadMsg)
		}
		l := int(rest[0])
		id, err := peer.IDFromBytes(rest[1 : 1+l])
		if err != nil {
			return nil, fmt.Errorf("%w: peer %d: %v", errBadMsg, i, err)
		}
		m.Peers = append(m.Peers, member{ID: id, Inc: binary.BigEndian.Uint64(rest[1+l:])})
		rest = rest[1+l+8:]
	}
	if len(rest) < 2 {
		return nil, fmt.Errorf("%w: truncated reason", errBadMsg)
	}
	rl := int(binary.BigEndian.Uint16(rest))
	if rl > maxReasonLen || len(rest) != 2+rl {
		return nil, fmt.Errorf("%w: reason of %d bytes in %d", errBadMsg, rl, len(rest)-2)
	}
	m.Reason = string(rest[2:])
	return m, nil
}
