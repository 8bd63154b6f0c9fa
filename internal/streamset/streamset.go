// Package streamset tracks the inbound libp2p streams of a protocol
// handler so that shutdown can reset them and wait for their handlers
// (the round streams and the link probes use one each).
package streamset

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
)

// Set tracks open inbound streams (of one protocol). The zero value is
// ready to use.
type Set struct {
	mu      sync.Mutex
	streams map[network.Stream]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// Add tracks s until Done; false (s reset) once the set is closed.
func (in *Set) Add(s network.Stream) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		s.Reset()
		return false
	}
	if in.streams == nil {
		in.streams = map[network.Stream]struct{}{}
	}
	in.streams[s] = struct{}{}
	in.wg.Add(1)
	return true
}

// Done ends the tracking of s: its handler returns.
func (in *Set) Done(s network.Stream) {
	in.mu.Lock()
	delete(in.streams, s)
	in.mu.Unlock()
	in.wg.Done()
}

// Close resets every tracked stream and waits for their handlers; streams
// added later are reset at once.
func (in *Set) Close() {
	in.mu.Lock()
	in.closed = true
	for s := range in.streams {
		s.Reset()
	}
	in.mu.Unlock()
	in.wg.Wait()
}
