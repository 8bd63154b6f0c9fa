package checkpoint

import (
	"context"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
)

// peerSlots bounds the streams a Fetcher holds open to each peer across
// all its fetches (FetcherConfig.MaxStreamsPerPeer).
type peerSlots struct {
	max int

	mu    sync.Mutex
	held  map[peer.ID]int
	freed chan struct{} // closed and replaced on every release
}

func newPeerSlots(max int) *peerSlots {
	return &peerSlots{max: max, held: make(map[peer.ID]int), freed: make(chan struct{})}
}

// tryAcquire takes a slot for p if one is free. Otherwise it returns a
// channel that is closed at the next release.
func (s *peerSlots) tryAcquire(p peer.ID) (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[p] >= s.max {
		return false, s.freed
	}
	s.held[p]++
	return true, nil
}

// acquire waits for a slot for p until ctx is done.
func (s *peerSlots) acquire(ctx context.Context, p peer.ID) error {
	for {
		ok, freed := s.tryAcquire(p)
		if ok {
			return nil
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// release returns a slot taken for p.
func (s *peerSlots) release(p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[p]--; s.held[p] <= 0 {
		delete(s.held, p)
	}
	close(s.freed)
	s.freed = make(chan struct{})
}
