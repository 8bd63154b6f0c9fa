package mesh

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestAllowed: with an allow list only listed peers (and self) are
// allowed, on every topic that asks; without one, everyone is.
func TestAllowed(t *testing.T) {
	self, listed, other := peer.ID("self"), peer.ID("listed"), peer.ID("other")
	m := &Mesh{self: self, allow: map[peer.ID]bool{listed: true}}
	if !m.Allowed(self) || !m.Allowed(listed) || m.Allowed(other) {
		t.Fatalf("with an allow list: self %v listed %v other %v", m.Allowed(self), m.Allowed(listed), m.Allowed(other))
	}
	if open := (&Mesh{self: self}); !open.Allowed(other) {
		t.Fatal("without an allow list a peer is refused")
	}
}
