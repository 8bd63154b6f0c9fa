package mesh

import (
	"errors"
	"fmt"
	"testing"

	"github.com/libp2p/go-libp2p/core/sec"
)

// TestForeignMesh: which join dial errors mean "another mesh answered".
func TestForeignMesh(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("failed to dial: all dials failed\n  * [/ip4/127.0.0.1/tcp/1] failed to negotiate security protocol: incoming message was too large"), true},
		{fmt.Errorf("/ip4/127.0.0.1/tcp/1: handshake (%w): EOF", errForeign), true},
		{errors.New("failed to dial: all dials failed\n  * [/ip4/127.0.0.1/tcp/1] dial tcp4 127.0.0.1:1: connect: connection refused"), false},
		{fmt.Errorf("failed to negotiate security protocol: %w", sec.ErrPeerIDMismatch{}), false},
	} {
		if got := foreignMesh(c.err); got != c.want {
			t.Errorf("foreignMesh(%v) = %v; want %v", c.err, got, c.want)
		}
	}
}
