package checkpoint

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Sentinel errors. Callers test them with errors.Is.
var (
	// ErrUnknownRoot: no store or provider holds a checkpoint with this root.
	ErrUnknownRoot = errors.New("checkpoint: unknown root")
	// ErrNoProvider: none of the providers could be reached (or all of them
	// failed for reasons other than bad data).
	ErrNoProvider = errors.New("checkpoint: no provider reachable")
	// ErrHashMismatch: data did not match its SHA-256 hash (after every
	// provider was tried, when returned by Fetch).
	ErrHashMismatch = errors.New("checkpoint: hash mismatch")
	// ErrDiskFull: the store's file system is out of space (ENOSPC).
	ErrDiskFull = errors.New("checkpoint: disk full")
	// ErrIncomplete: the checkpoint is held only partially.
	ErrIncomplete = errors.New("checkpoint: incomplete")
	// ErrBadManifest: a manifest failed to decode or violates a cap.
	ErrBadManifest = errors.New("checkpoint: bad manifest")
	// ErrBadAnnouncement: an announcement failed to decode or validate.
	ErrBadAnnouncement = errors.New("checkpoint: bad announcement")
	// ErrForgedAnnouncement: the announced provider is not the gossip author.
	ErrForgedAnnouncement = errors.New("checkpoint: announcement provider is not its author")
	// ErrBadFrame: a protocol frame failed to decode or violates a cap.
	ErrBadFrame = errors.New("checkpoint: bad frame")
	// ErrOutOfRange: a chunk index is not below the manifest's chunk count.
	ErrOutOfRange = errors.New("checkpoint: chunk index out of range")
	// ErrLocked: another process has the store open.
	ErrLocked = errors.New("checkpoint: store in use by another process")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("checkpoint: store closed")
	// ErrDropped: Put stored the checkpoint but retention removed it
	// before Put returned (newer checkpoints were stored meanwhile), so it
	// is not held.
	ErrDropped = errors.New("checkpoint: stored checkpoint removed by retention at once")
)

// NoSpaceError refuses a checkpoint, before anything is allocated for it,
// because it does not fit in the free space of the store's file system.
// errors.Is(err, ErrDiskFull) holds for it.
type NoSpaceError struct {
	Root Root
	Need int64 // bytes the checkpoint needs
	Free int64 // bytes free when it was refused
}

func (e *NoSpaceError) Error() string {
	what := "checkpoint"
	if !e.Root.IsZero() {
		what += " " + e.Root.Short()
	}
	return fmt.Sprintf("%s refused: needs %d bytes, the store's file system has %d free", what, e.Need, e.Free)
}

// Unwrap returns ErrDiskFull.
func (e *NoSpaceError) Unwrap() error { return ErrDiskFull }

// PeerError is a failure attributed to one provider.
type PeerError struct {
	Peer peer.ID
	Err  error
}

func (e *PeerError) Error() string { return fmt.Sprintf("peer %s: %v", e.Peer, e.Err) }

// Unwrap returns the underlying error.
func (e *PeerError) Unwrap() error { return e.Err }
