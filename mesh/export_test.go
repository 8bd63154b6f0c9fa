package mesh

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Hooks for the external tests (package mesh_test), which run real node
// processes against a Mesh of the test process that lies.

// EncodeFailureNotice encodes a failure notice with the given fields.
func EncodeFailureNotice(meshName string, sender peer.ID, kind State, subject peer.ID, inc uint64) ([]byte, error) {
	return encodeFailure(nil, &failureNotice{Mesh: meshName, Sender: sender, Kind: kind, Subject: subject, Incarnation: inc})
}

// PublishRawFailure publishes b on m's failure topic, signed by m.
func (m *Mesh) PublishRawFailure(ctx context.Context, b []byte) error {
	return m.fTopic.Publish(ctx, b)
}
