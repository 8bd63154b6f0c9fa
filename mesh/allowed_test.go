package mesh

import (
	"net/netip"
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

// TestConnRateLimiter: a cluster member's IP may reconnect in bursts (after
// a partition or a restart) without being refused; loopback is not limited.
func TestConnRateLimiter(t *testing.T) {
	l := connRateLimiter()
	member := netip.MustParseAddr("10.213.0.5")
	for i := range 64 {
		if !l.Allow(member) {
			t.Fatalf("connection %d from one member's IP refused; libp2p's default allows 16", i+1)
		}
	}
	lo := netip.MustParseAddr("127.0.0.1")
	for i := range 1000 {
		if !l.Allow(lo) {
			t.Fatalf("loopback connection %d refused", i+1)
		}
	}
}
