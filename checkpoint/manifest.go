package checkpoint

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
)

// Manifest caps. A manifest that exceeds any of them is rejected before
// anything is allocated for it.
const (
	// ManifestVersion is the manifest encoding without a run ID, and
	// ManifestVersionRun the one with a run ID. Encode writes the first
	// when Manifest.RunID is empty, so such checkpoints keep the roots they
	// always had and older nodes still read them; both are decoded.
	ManifestVersion    = 1
	ManifestVersionRun = 2
	// MinChunkSize and MaxChunkSize bound Manifest.ChunkSize.
	MinChunkSize = 1 << 10
	MaxChunkSize = 64 << 20
	// MaxChunks bounds the number of chunks (and so the manifest to 8 MiB).
	MaxChunks = 1 << 18
	// MaxCheckpointSize bounds a checkpoint's size in bytes (1 TiB).
	MaxCheckpointSize = 1 << 40

	manifestMagic     = "RMCM"
	manifestHeaderLen = 4 + 1 + 8 + 8 + 4 + 4
	// MaxManifestLen is the largest valid encoded manifest.
	MaxManifestLen = manifestHeaderLen + 1 + MaxRunIDLen + MaxChunks*sha256.Size
)

// Hash is a SHA-256 digest.
type Hash [sha256.Size]byte

// Root identifies a checkpoint: the SHA-256 of its encoded manifest.
type Root Hash

// String returns the root as lowercase hex.
func (r Root) String() string { return hex.EncodeToString(r[:]) }

// Short returns the first 12 hex digits, for logs.
func (r Root) Short() string { return r.String()[:12] }

// LogValue implements slog.LogValuer.
func (r Root) LogValue() slog.Value { return slog.StringValue(r.Short()) }

// IsZero reports whether r is the zero root.
func (r Root) IsZero() bool { return r == Root{} }

// ParseRoot parses 64 hex digits.
func ParseRoot(s string) (Root, error) {
	var r Root
	if len(s) != 2*len(r) {
		return r, fmt.Errorf("checkpoint: root %q: want %d hex digits", s, 2*len(r))
	}
	if _, err := hex.Decode(r[:], []byte(s)); err != nil {
		return r, fmt.Errorf("checkpoint: root %q: %w", s, err)
	}
	return r, nil
}

// Manifest describes a checkpoint: its step, size, run and the hash of
// every chunk. All chunks but the last are ChunkSize bytes long.
type Manifest struct {
	Step      uint64
	Size      int64
	ChunkSize uint32
	// RunID names the training run the checkpoint belongs to ("" for
	// none; see ValidateRunID). It is part of the encoding, so of the root.
	RunID  string
	Chunks []Hash
}

// NumChunks returns how many chunks a checkpoint of size bytes has.
func NumChunks(size int64, chunkSize uint32) int {
	if size <= 0 {
		return 0
	}
	return int((size + int64(chunkSize) - 1) / int64(chunkSize))
}

// ChunkLen returns the length of chunk i (which must be in range).
func (m *Manifest) ChunkLen(i int) int {
	off := int64(i) * int64(m.ChunkSize)
	if rest := m.Size - off; rest < int64(m.ChunkSize) {
		return int(rest)
	}
	return int(m.ChunkSize)
}

// ChunkOffset returns the byte offset of chunk i.
func (m *Manifest) ChunkOffset(i int) int64 { return int64(i) * int64(m.ChunkSize) }

// Validate checks the caps and that the chunk count matches the size.
func (m *Manifest) Validate() error {
	switch {
	case m.Size < 0 || m.Size > MaxCheckpointSize:
		return fmt.Errorf("%w: size %d outside [0, %d]", ErrBadManifest, m.Size, int64(MaxCheckpointSize))
	case m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize:
		return fmt.Errorf("%w: chunk size %d outside [%d, %d]", ErrBadManifest, m.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	n := NumChunks(m.Size, m.ChunkSize)
	if n > MaxChunks {
		return fmt.Errorf("%w: %d chunks exceed %d", ErrBadManifest, n, MaxChunks)
	}
	if len(m.Chunks) != n {
		return fmt.Errorf("%w: %d chunk hashes for %d chunks", ErrBadManifest, len(m.Chunks), n)
	}
	if err := ValidateRunID(m.RunID); err != nil {
		return fmt.Errorf("%w: %w", ErrBadManifest, err)
	}
	return nil
}

// version returns the encoding version m is written in.
func (m *Manifest) version() byte {
	if m.RunID == "" {
		return ManifestVersion
	}
	return ManifestVersionRun
}

// hashesAt returns the offset of the chunk hashes in an encoding of m.
func (m *Manifest) hashesAt() int {
	if m.RunID == "" {
		return manifestHeaderLen
	}
	return manifestHeaderLen + 1 + len(m.RunID)
}

// Encode returns the binary encoding (layout in doc.go). It fails only if
// the manifest is invalid.
func (m *Manifest) Encode() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, manifestHeaderLen, m.hashesAt()+len(m.Chunks)*sha256.Size)
	copy(b, manifestMagic)
	b[4] = m.version()
	binary.BigEndian.PutUint64(b[5:], m.Step)
	binary.BigEndian.PutUint64(b[13:], uint64(m.Size))
	binary.BigEndian.PutUint32(b[21:], m.ChunkSize)
	binary.BigEndian.PutUint32(b[25:], uint32(len(m.Chunks)))
	if m.RunID != "" {
		b = append(b, byte(len(m.RunID)))
		b = append(b, m.RunID...)
	}
	for _, h := range m.Chunks {
		b = append(b, h[:]...)
	}
	return b, nil
}

// Root returns the SHA-256 of the encoding.
func (m *Manifest) Root() (Root, error) {
	b, err := m.Encode()
	if err != nil {
		return Root{}, err
	}
	return Root(sha256.Sum256(b)), nil
}

// DecodeManifest decodes and validates an encoded manifest of either
// version. Every length is checked against the caps before anything is
// allocated.
func DecodeManifest(b []byte) (Manifest, error) {
	var m Manifest
	if len(b) < manifestHeaderLen {
		return m, fmt.Errorf("%w: %d bytes, header needs %d", ErrBadManifest, len(b), manifestHeaderLen)
	}
	if string(b[:4]) != manifestMagic {
		return m, fmt.Errorf("%w: bad magic %q", ErrBadManifest, b[:4])
	}
	if b[4] != ManifestVersion && b[4] != ManifestVersionRun {
		return m, fmt.Errorf("%w: version %d, want %d or %d", ErrBadManifest, b[4], ManifestVersion, ManifestVersionRun)
	}
	m.Step = binary.BigEndian.Uint64(b[5:])
	size := binary.BigEndian.Uint64(b[13:])
	if size > MaxCheckpointSize {
		return m, fmt.Errorf("%w: size %d exceeds %d", ErrBadManifest, size, int64(MaxCheckpointSize))
	}
	m.Size = int64(size)
	m.ChunkSize = binary.BigEndian.Uint32(b[21:])
	count := binary.BigEndian.Uint32(b[25:])
	if count > MaxChunks {
		return m, fmt.Errorf("%w: %d chunks exceed %d", ErrBadManifest, count, MaxChunks)
	}
	hashes := manifestHeaderLen
	if b[4] == ManifestVersionRun {
		run, err := decodeRunID(b[manifestHeaderLen:])
		if err != nil {
			return m, fmt.Errorf("%w: %w", ErrBadManifest, err)
		}
		m.RunID = run
		hashes += 1 + len(run)
	}
	if want := hashes + int(count)*sha256.Size; len(b) != want {
		return m, fmt.Errorf("%w: %d bytes, want %d for %d chunks", ErrBadManifest, len(b), want, count)
	}
	if m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize {
		return m, fmt.Errorf("%w: chunk size %d outside [%d, %d]", ErrBadManifest, m.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if n := NumChunks(m.Size, m.ChunkSize); n != int(count) {
		return m, fmt.Errorf("%w: %d chunk hashes for %d chunks", ErrBadManifest, count, n)
	}
	m.Chunks = make([]Hash, count)
	for i := range m.Chunks {
		copy(m.Chunks[i][:], b[hashes+i*sha256.Size:])
	}
	return m, nil
}
