package allreduce

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Version is the wire version this package speaks.
const Version = 5

// headerMagic starts every stream.
var headerMagic = [4]byte{'R', 'M', 'A', 'R'}

// headerFixedLen is the header length before the mesh name.
const headerFixedLen = 115

// Header opens every stream of a round; see the package doc for the byte
// layout. Both ends build the header they expect from their own Round,
// Options and Config; the receiver compares every field.
type Header struct {
	Version     uint8
	DType       DType
	Op          Op
	Lane        uint8 // which lane this stream carries
	Lanes       uint8 // lanes in the round
	Step        uint64
	Attempt     uint32
	Count       uint64 // elements in the whole buffer
	ChunkBytes  uint32
	MembersHash [32]byte
	// ScheduleHash is Plan.Hash of the round's plan (version 2).
	ScheduleHash [32]byte
	// Part and Parts (version 3): which of the step's buffers this round
	// reduces, of how many (Round.Part, Round.Parts; 0 of 1 for a step
	// of one buffer).
	Part  uint32
	Parts uint32
	// Flags (version 4): FlagTrustedNetwork when the member runs
	// Config.TrustedNetwork; every member must agree.
	Flags uint8
	// Offset (version 5): the part's first element in the step's whole
	// buffer (Round.Offset), so members that cut the buffer into parts at
	// different places fail with a settings mismatch instead of mixing
	// elements.
	Offset uint64
	Mesh   string
}

// Header flags. Bit values are append only.
const (
	// FlagTrustedNetwork: lanes carry plaintext on their own TCP
	// connections (Config.TrustedNetwork).
	FlagTrustedNetwork = 1 << 0
)

// AppendHeader appends h's encoding to b.
func AppendHeader(b []byte, h Header) []byte {
	b = append(b, headerMagic[:]...)
	b = append(b, h.Version, byte(h.DType), byte(h.Op), h.Lane, h.Lanes, byte(len(h.Mesh)))
	b = binary.BigEndian.AppendUint64(b, h.Step)
	b = binary.BigEndian.AppendUint32(b, h.Attempt)
	b = binary.BigEndian.AppendUint64(b, h.Count)
	b = binary.BigEndian.AppendUint32(b, h.ChunkBytes)
	b = append(b, h.MembersHash[:]...)
	b = append(b, h.ScheduleHash[:]...)
	b = binary.BigEndian.AppendUint32(b, h.Part)
	b = binary.BigEndian.AppendUint32(b, h.Parts)
	b = append(b, h.Flags)
	b = binary.BigEndian.AppendUint64(b, h.Offset)
	return append(b, h.Mesh...)
}

// DecodeHeader decodes a whole header. It checks structure only (magic,
// version, lengths); field values are compared by the receiver.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < headerFixedLen {
		return Header{}, fmt.Errorf("%w: %d bytes, need %d", ErrBadHeader, len(b), headerFixedLen)
	}
	h, meshLen, err := decodeFixed(b[:headerFixedLen])
	if err != nil {
		return Header{}, err
	}
	if len(b) != headerFixedLen+meshLen {
		return Header{}, fmt.Errorf("%w: %d bytes, need %d", ErrBadHeader, len(b), headerFixedLen+meshLen)
	}
	h.Mesh = string(b[headerFixedLen:])
	return h, nil
}

// ReadHeader reads one header from r.
func ReadHeader(r io.Reader) (Header, error) {
	var fixed [headerFixedLen]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Header{}, fmt.Errorf("read header: %w", err)
	}
	h, meshLen, err := decodeFixed(fixed[:])
	if err != nil {
		return Header{}, err
	}
	mesh := make([]byte, meshLen)
	if _, err := io.ReadFull(r, mesh); err != nil {
		return Header{}, fmt.Errorf("read header mesh: %w", err)
	}
	h.Mesh = string(mesh)
	return h, nil
}

func decodeFixed(b []byte) (Header, int, error) {
	if [4]byte(b[:4]) != headerMagic {
		return Header{}, 0, fmt.Errorf("%w: bad magic %x", ErrBadHeader, b[:4])
	}
	h := Header{
		Version:    b[4],
		DType:      DType(b[5]),
		Op:         Op(b[6]),
		Lane:       b[7],
		Lanes:      b[8],
		Step:       binary.BigEndian.Uint64(b[10:]),
		Attempt:    binary.BigEndian.Uint32(b[18:]),
		Count:      binary.BigEndian.Uint64(b[22:]),
		ChunkBytes: binary.BigEndian.Uint32(b[30:]),
	}
	copy(h.MembersHash[:], b[34:66])
	copy(h.ScheduleHash[:], b[66:98])
	h.Part = binary.BigEndian.Uint32(b[98:])
	h.Parts = binary.BigEndian.Uint32(b[102:])
	h.Flags = b[106]
	h.Offset = binary.BigEndian.Uint64(b[107:])
	if h.Version != Version {
		return Header{}, 0, fmt.Errorf("%w: version %d, want %d", ErrBadHeader, h.Version, Version)
	}
	meshLen := int(b[9])
	if meshLen > MaxMeshLen {
		return Header{}, 0, fmt.Errorf("%w: mesh name %d bytes, max %d", ErrBadHeader, meshLen, MaxMeshLen)
	}
	return h, meshLen, nil
}

// roundKey is the part of a header that says which round and lane a stream
// belongs to; the rest must then match exactly.
type roundKey struct {
	step    uint64
	attempt uint32
	part    uint32
	lane    uint8
}

func (h Header) key() roundKey { return roundKey{h.Step, h.Attempt, h.Part, h.Lane} }

// mismatch names the first field where got differs from want, with both
// values, or returns "" when they agree. settings reports that the field
// is one no retry changes (ErrSettingsMismatch): the round's identity
// (mesh, step, attempt, members) agrees and the call or config differs.
func mismatch(want, got Header) (reason string, settings bool) {
	type field struct {
		name      string
		want, got any
		settings  bool
	}
	fields := []field{
		{"version", want.Version, got.Version, true},
		{"mesh", want.Mesh, got.Mesh, false},
		{"step", want.Step, got.Step, false},
		{"attempt", want.Attempt, got.Attempt, false},
		{"part", want.Part, got.Part, false},
		{"members_hash", fmt.Sprintf("%x", want.MembersHash[:6]), fmt.Sprintf("%x", got.MembersHash[:6]), false},
		{"dtype", want.DType, got.DType, true},
		{"op", want.Op, got.Op, true},
		{"count", want.Count, got.Count, true},
		{"chunk_bytes", want.ChunkBytes, got.ChunkBytes, true},
		{"lanes", want.Lanes, got.Lanes, true},
		{"schedule_hash", fmt.Sprintf("%x", want.ScheduleHash[:6]), fmt.Sprintf("%x", got.ScheduleHash[:6]), true},
		{"parts", want.Parts, got.Parts, true},
		{"part_offset", want.Offset, got.Offset, true},
		{"trusted_network", want.Flags&FlagTrustedNetwork != 0, got.Flags&FlagTrustedNetwork != 0, true},
		{"flags", want.Flags, got.Flags, true},
		{"lane", want.Lane, got.Lane, false},
	}
	for _, f := range fields {
		if f.want != f.got {
			return fmt.Sprintf("%s: got %v, want %v", f.name, f.got, f.want), f.settings
		}
	}
	return "", false
}

// mismatchErr is the error for a mismatch found here or reported by the
// other side (prefix says which).
func mismatchErr(prefix, reason string, settings bool) error {
	switch {
	case settings && reason == "":
		return fmt.Errorf("%w (%w)", ErrSettingsMismatch, ErrHeaderMismatch)
	case settings:
		return fmt.Errorf("%w (%w): %s%s", ErrSettingsMismatch, ErrHeaderMismatch, prefix, reason)
	}
	return fmt.Errorf("%w: %s%s", ErrHeaderMismatch, prefix, reason)
}
