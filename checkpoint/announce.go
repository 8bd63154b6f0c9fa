package checkpoint

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Announcer is the gossip the Catalog needs: the node adapts it to the
// mesh's gossipsub checkpoint topic. Next must return the message's signed
// author (pubsub Message.GetFrom), not the peer that relayed it.
// Implementations are safe for concurrent use and return once ctx is done.
type Announcer interface {
	Publish(ctx context.Context, data []byte) error
	Next(ctx context.Context) (data []byte, from peer.ID, err error)
}

// Announcement says that Provider holds the complete checkpoint Root of
// Step, Size bytes long, of the training run RunID ("" for none).
type Announcement struct {
	Step     uint64
	Root     Root
	Size     int64
	Provider peer.ID
	RunID    string
}

const (
	announceMagic = "RMCA"
	// announceVersion is the encoding without a run ID, announceVersionRun
	// the one with a run ID (appended). Encode writes the first when RunID
	// is empty, so older nodes keep accepting those; both are decoded.
	announceVersion    = 1
	announceVersionRun = 2
	announceHeaderLen  = 4 + 1 + 8 + 32 + 8 + 2
	// MaxPeerIDLen bounds the provider peer ID in an announcement.
	MaxPeerIDLen = 128
	// MaxAnnouncementLen is the largest valid encoded announcement.
	MaxAnnouncementLen = announceHeaderLen + MaxPeerIDLen + 1 + MaxRunIDLen
)

// Encode returns the binary encoding (layout in doc.go).
func (a Announcement) Encode() ([]byte, error) {
	if err := a.validate(); err != nil {
		return nil, err
	}
	id := []byte(a.Provider)
	b := make([]byte, announceHeaderLen, announceHeaderLen+len(id)+1+len(a.RunID))
	copy(b, announceMagic)
	b[4] = announceVersion
	binary.BigEndian.PutUint64(b[5:], a.Step)
	copy(b[13:45], a.Root[:])
	binary.BigEndian.PutUint64(b[45:], uint64(a.Size))
	binary.BigEndian.PutUint16(b[53:], uint16(len(id)))
	b = append(b, id...)
	if a.RunID != "" {
		b[4] = announceVersionRun
		b = append(b, byte(len(a.RunID)))
		b = append(b, a.RunID...)
	}
	return b, nil
}

func (a Announcement) validate() error {
	switch {
	case a.Size < 0 || a.Size > MaxCheckpointSize:
		return fmt.Errorf("%w: size %d outside [0, %d]", ErrBadAnnouncement, a.Size, int64(MaxCheckpointSize))
	case a.Root.IsZero():
		return fmt.Errorf("%w: zero root", ErrBadAnnouncement)
	case len(a.Provider) == 0 || len(a.Provider) > MaxPeerIDLen:
		return fmt.Errorf("%w: provider id of %d bytes", ErrBadAnnouncement, len(a.Provider))
	}
	if err := a.Provider.Validate(); err != nil {
		return fmt.Errorf("%w: provider: %w", ErrBadAnnouncement, err)
	}
	if err := ValidateRunID(a.RunID); err != nil {
		return fmt.Errorf("%w: %w", ErrBadAnnouncement, err)
	}
	return nil
}

// DecodeAnnouncement decodes and validates an encoded announcement of
// either version.
func DecodeAnnouncement(b []byte) (Announcement, error) {
	var a Announcement
	if len(b) < announceHeaderLen || len(b) > MaxAnnouncementLen {
		return a, fmt.Errorf("%w: %d bytes", ErrBadAnnouncement, len(b))
	}
	if string(b[:4]) != announceMagic {
		return a, fmt.Errorf("%w: bad magic %q", ErrBadAnnouncement, b[:4])
	}
	if b[4] != announceVersion && b[4] != announceVersionRun {
		return a, fmt.Errorf("%w: version %d, want %d or %d", ErrBadAnnouncement, b[4], announceVersion, announceVersionRun)
	}
	a.Step = binary.BigEndian.Uint64(b[5:])
	copy(a.Root[:], b[13:45])
	size := binary.BigEndian.Uint64(b[45:])
	if size > MaxCheckpointSize {
		return a, fmt.Errorf("%w: size %d exceeds %d", ErrBadAnnouncement, size, int64(MaxCheckpointSize))
	}
	a.Size = int64(size)
	idLen := int(binary.BigEndian.Uint16(b[53:]))
	idEnd := announceHeaderLen + idLen
	if idLen > MaxPeerIDLen || len(b) < idEnd {
		return a, fmt.Errorf("%w: provider id of %d bytes in %d", ErrBadAnnouncement, idLen, len(b))
	}
	end := idEnd
	if b[4] == announceVersionRun {
		run, err := decodeRunID(b[idEnd:])
		if err != nil {
			return a, fmt.Errorf("%w: %w", ErrBadAnnouncement, err)
		}
		a.RunID = run
		end += 1 + len(run)
	}
	if len(b) != end {
		return a, fmt.Errorf("%w: %d bytes, want %d", ErrBadAnnouncement, len(b), end)
	}
	id, err := peer.IDFromBytes(b[announceHeaderLen:idEnd])
	if err != nil {
		return a, fmt.Errorf("%w: provider: %w", ErrBadAnnouncement, err)
	}
	a.Provider = id
	return a, a.validate()
}

// VerifyAuthor checks that the announcement's provider is the gossip
// author: a node can only announce itself.
func (a Announcement) VerifyAuthor(from peer.ID) error {
	if a.Provider != from {
		return fmt.Errorf("%w: provider %s, author %s", ErrForgedAnnouncement, a.Provider, from)
	}
	return nil
}

// ValidateAnnouncement decodes data and checks it was authored by its
// provider. node registers it as the gossipsub topic validator (rejecting,
// and so scoring, forged or malformed messages before they spread); the
// Catalog checks again on receipt.
func ValidateAnnouncement(data []byte, author peer.ID) (Announcement, error) {
	a, err := DecodeAnnouncement(data)
	if err != nil {
		return a, err
	}
	return a, a.VerifyAuthor(author)
}
