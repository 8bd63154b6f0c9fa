package roundrun

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/ringmesh/ringmesh/node/rounds"
)

// Protocol carries the round protocol's messages (node/rounds): a
// stream per peer pair and direction, one frame per message, no replies on
// the same stream. Bulk data goes over the all-reduce protocol
// (allreduce.ProtocolID).
// Version 2 replaced version 1's request/reply messages with the
// consensus messages of node/rounds; version 3 added a value's links and
// shares.
const Protocol = "/ringmesh/round/3"

// encodeMsg encodes m as a frame: a u32 big-endian length (from
// rounds.MinMessageSize to rounds.MaxMessageSize), then the message in the
// byte layout of rounds.AppendMessage.
func encodeMsg(m rounds.Message) ([]byte, error) {
	b, err := rounds.AppendMessage(make([]byte, 4, 256), m)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b, nil
}

// readMsg reads one frame off r. A frame that is not a message is an
// error that wraps rounds.ErrMalformed.
func readMsg(r io.Reader) (rounds.Message, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return rounds.Message{}, err
	}
	n := binary.BigEndian.Uint32(l[:])
	if n < rounds.MinMessageSize || n > rounds.MaxMessageSize {
		return rounds.Message{}, fmt.Errorf("%w frame: length %d", rounds.ErrMalformed, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return rounds.Message{}, fmt.Errorf("%w frame: %v", rounds.ErrMalformed, err)
	}
	return rounds.DecodeMessage(b)
}
