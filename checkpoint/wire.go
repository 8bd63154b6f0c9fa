package checkpoint

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ProtocolID is the fetch protocol (frame layout in doc.go).
const ProtocolID = "/ringmesh/checkpoint/1"

// Frame types. Append-only.
const (
	frameReqManifest  byte = 0x01
	frameReqChunk     byte = 0x02
	frameRespManifest byte = 0x81
	frameRespChunk    byte = 0x82
	frameRespError    byte = 0xff
)

// Error codes carried by frameRespError. Append-only.
const (
	codeUnknownRoot byte = 1
	codeOutOfRange  byte = 2
	codeNotHeld     byte = 3
	codeBadRequest  byte = 4
	codeInternal    byte = 5
)

const (
	frameHeaderLen  = 4 + 1 // length (of type + body), type
	maxRequestLen   = 1 + 32 + 4
	maxErrorMessage = 256
	// maxResponseLen is the largest response frame (type + body) accepted.
	maxResponseLen = 1 + max(MaxManifestLen, 4+MaxChunkSize)
)

// RemoteError is an error reply from a provider.
type RemoteError struct {
	Code    byte
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("checkpoint: remote error %d: %s", e.Code, e.Message)
}

// Is maps remote codes onto the package's sentinels.
func (e *RemoteError) Is(target error) bool {
	switch e.Code {
	case codeUnknownRoot:
		return target == ErrUnknownRoot
	case codeOutOfRange:
		return target == ErrOutOfRange
	case codeNotHeld:
		return target == ErrIncomplete
	case codeBadRequest:
		return target == ErrBadFrame
	}
	return false
}

// putHeader writes a frame header for a body of n bytes into b[:5].
func putHeader(b []byte, typ byte, n int) {
	binary.BigEndian.PutUint32(b, uint32(1+n))
	b[4] = typ
}

// readFrame reads one frame. A length above maxLen is rejected before
// anything is allocated; buf is reused when it is large enough. The
// returned body aliases buf.
func readFrame(r io.Reader, maxLen int, buf []byte) (typ byte, body []byte, err error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return 0, nil, err // io.EOF between frames is a clean end
	}
	n := int(binary.BigEndian.Uint32(hdr[:4]))
	if n < 1 || n > maxLen {
		return 0, nil, fmt.Errorf("%w: frame length %d outside [1, %d]", ErrBadFrame, n, maxLen)
	}
	if _, err := io.ReadFull(r, hdr[4:]); err != nil {
		return 0, nil, unexpected(err)
	}
	if cap(buf) < n-1 {
		buf = make([]byte, n-1)
	}
	body = buf[:n-1]
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, unexpected(err)
	}
	return hdr[4], body, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// encodeRequest returns a manifest request (chunk < 0) or a chunk request.
func encodeRequest(root Root, chunk int) []byte {
	if chunk < 0 {
		b := make([]byte, frameHeaderLen+32)
		putHeader(b, frameReqManifest, 32)
		copy(b[frameHeaderLen:], root[:])
		return b
	}
	b := make([]byte, frameHeaderLen+36)
	putHeader(b, frameReqChunk, 36)
	copy(b[frameHeaderLen:], root[:])
	binary.BigEndian.PutUint32(b[frameHeaderLen+32:], uint32(chunk))
	return b
}

// decodeRequest parses a request frame's type and body; chunk is -1 for a
// manifest request.
func decodeRequest(typ byte, body []byte) (root Root, chunk int64, err error) {
	switch {
	case typ == frameReqManifest && len(body) == 32:
		copy(root[:], body)
		return root, -1, nil
	case typ == frameReqChunk && len(body) == 36:
		copy(root[:], body)
		return root, int64(binary.BigEndian.Uint32(body[32:])), nil
	}
	return root, 0, fmt.Errorf("%w: request type %#x with %d bytes", ErrBadFrame, typ, len(body))
}

// encodeError returns an error reply; the message is truncated to its cap.
func encodeError(code byte, msg string) []byte {
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	b := make([]byte, frameHeaderLen+1+len(msg))
	putHeader(b, frameRespError, 1+len(msg))
	b[frameHeaderLen] = code
	copy(b[frameHeaderLen+1:], msg)
	return b
}

// decodeError parses an error reply body.
func decodeError(body []byte) error {
	if len(body) < 1 || len(body) > 1+maxErrorMessage {
		return fmt.Errorf("%w: error reply of %d bytes", ErrBadFrame, len(body))
	}
	return &RemoteError{Code: body[0], Message: string(body[1:])}
}
