package allreduce

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// frameHeaderLen is the length prefix of a data frame.
const frameHeaderLen = 4

// frameWriter writes a length prefix and its payload together (a direct
// lane's connection).
type frameWriter interface {
	writeFrame(l, payload []byte) error
}

// WriteFrame writes one length-prefixed frame.
func WriteFrame(w io.Writer, payload []byte) error {
	var l [frameHeaderLen]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(payload)))
	if fw, ok := w.(frameWriter); ok && len(payload) > 0 {
		return fw.writeFrame(l[:], payload)
	}
	if _, err := w.Write(l[:]); err != nil {
		return err
	}
	if len(payload) == 0 {
		return nil
	}
	_, err := w.Write(payload)
	return err
}

// ReadFrameLen reads a frame's length prefix and rejects lengths over max.
func ReadFrameLen(r io.Reader, max int) (int, error) {
	var l [frameHeaderLen]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(l[:])
	if uint64(n) > uint64(max) {
		return 0, fmt.Errorf("%w: %d bytes, max %d", ErrFrameTooLarge, n, max)
	}
	return int(n), nil
}

// ReadFrame reads one frame of at most max bytes into buf (grown only when
// too small, after the length was checked) and returns the payload.
func ReadFrame(r io.Reader, max int, buf []byte) ([]byte, error) {
	n, err := ReadFrameLen(r, max)
	if err != nil {
		return nil, err
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("read frame payload: %w", noEOF(err))
	}
	return buf, nil
}

// readExact reads one frame whose length must be exactly len(buf).
func readExact(r io.Reader, buf []byte) error {
	n, err := ReadFrameLen(r, len(buf))
	if err != nil {
		return noEOF(err)
	}
	if n != len(buf) {
		return fmt.Errorf("%w: frame of %d bytes, want %d", ErrProtocol, n, len(buf))
	}
	if _, err := io.ReadFull(r, buf); err != nil {
		return noEOF(err)
	}
	return nil
}

// noEOF turns a clean EOF in the middle of a round into an unexpected one.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func encodeWeight(w float64) []byte {
	return binary.BigEndian.AppendUint64(nil, math.Float64bits(w))
}

func decodeWeight(b []byte) float64 {
	return math.Float64frombits(binary.BigEndian.Uint64(b))
}

// Control messages flow from a stream's receiver back to its sender.
// Type values are append only.
const (
	ctrlAck    = 1 // [type]
	ctrlReject = 2 // [type][code u8][u16 len][reason]
	ctrlAbort  = 3 // [type][cause u8][u16 len][origin peer ID][u16 len][reason]
	ctrlLane   = 4 // [type][mode u8] (mode laneOffer: [port u16][token 32]); version 4, after the ack
)

// Lane modes carried by ctrlLane. Append only.
const (
	laneNone  = 0 // stay on this stream
	laneOffer = 1 // connect to the port and present the token (direct.go)
)

// Reject codes carried by ctrlReject. Append only.
const (
	rejectHeader     = 1 // a header field disagrees
	rejectNotStarted = 2 // held too long: the round never started here
	rejectBusy       = 3 // too many held streams
	rejectClosed     = 4 // transport closing
	rejectSettings   = 5 // a header field no retry changes disagrees (count, dtype, op, chunking, lanes, version)
)

// Abort causes carried by ctrlAbort. Append only.
const (
	causeOther      = 0 // a peer failed or misbehaved
	causeHeader     = 1 // a header mismatch
	causeZeroWeight = 2 // the total weight is zero
	causeSettings   = 3 // members disagree on the round's settings
)

// maxCtrlText caps the text fields of control messages.
const maxCtrlText = 1024

// control is a decoded control message.
type control struct {
	Type   byte
	Code   byte   // reject code, abort cause or lane mode
	Origin string // raw peer ID bytes for ctrlAbort
	Reason string
	Port   uint16             // ctrlLane offer
	Token  [laneTokenLen]byte // ctrlLane offer
}

// appendControl appends c's encoding to b; text fields are truncated to
// their caps.
func appendControl(b []byte, c control) []byte {
	b = append(b, c.Type)
	switch c.Type {
	case ctrlReject:
		b = append(b, c.Code)
		b = appendText(b, c.Reason)
	case ctrlAbort:
		b = append(b, c.Code)
		b = appendText(b, c.Origin)
		b = appendText(b, c.Reason)
	case ctrlLane:
		b = append(b, c.Code)
		if c.Code == laneOffer {
			b = binary.BigEndian.AppendUint16(b, c.Port)
			b = append(b, c.Token[:]...)
		}
	}
	return b
}

func appendText(b []byte, s string) []byte {
	if len(s) > maxCtrlText {
		s = s[:maxCtrlText]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// readControl reads one control message.
func readControl(r io.Reader) (control, error) {
	var t [1]byte
	if _, err := io.ReadFull(r, t[:]); err != nil {
		return control{}, err
	}
	c := control{Type: t[0]}
	var err error
	switch c.Type {
	case ctrlAck:
	case ctrlReject:
		if _, err = io.ReadFull(r, t[:]); err != nil {
			return control{}, noEOF(err)
		}
		c.Code = t[0]
		c.Reason, err = readText(r)
	case ctrlAbort:
		if _, err = io.ReadFull(r, t[:]); err != nil {
			return control{}, noEOF(err)
		}
		c.Code = t[0]
		if c.Origin, err = readText(r); err == nil {
			c.Reason, err = readText(r)
		}
	case ctrlLane:
		if _, err = io.ReadFull(r, t[:]); err != nil {
			return control{}, noEOF(err)
		}
		c.Code = t[0]
		switch c.Code {
		case laneNone:
		case laneOffer:
			var b [2 + laneTokenLen]byte
			if _, err = io.ReadFull(r, b[:]); err != nil {
				return control{}, noEOF(err)
			}
			c.Port = binary.BigEndian.Uint16(b[:])
			copy(c.Token[:], b[2:])
		default:
			return control{}, fmt.Errorf("%w: lane mode %d", ErrProtocol, c.Code)
		}
	default:
		return control{}, fmt.Errorf("%w: control message type %d", ErrProtocol, c.Type)
	}
	if err != nil {
		return control{}, err
	}
	return c, nil
}

func readText(r io.Reader) (string, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return "", noEOF(err)
	}
	n := int(binary.BigEndian.Uint16(l[:]))
	if n > maxCtrlText {
		return "", fmt.Errorf("%w: control text %d bytes, max %d", ErrFrameTooLarge, n, maxCtrlText)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", noEOF(err)
	}
	return string(b), nil
}
