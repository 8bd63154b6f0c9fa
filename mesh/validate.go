package mesh

import (
	"context"
	"math"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Reasons passed to Metrics.InvalidMessage.
const (
	reasonOversized       = "oversized"
	reasonMalformed       = "malformed"
	reasonWrongMesh       = "wrong_mesh"
	reasonForgedSender    = "forged_sender"
	reasonPayloadTooLarge = "payload_too_large"
	reasonNotAllowed      = "not_allowed"
	reasonBadLeave        = "bad_leave"
	// A suspect or dead notice about its own sender (a member leaves; it
	// never declares itself failed).
	reasonBadNotice = "bad_notice"
	// A heartbeat in a state other than alive or left.
	reasonBadState = "bad_state"
	// A failure notice at the last incarnation, or one more than
	// maxIncarnationSkew above the subject's known incarnation.
	reasonImplausibleIncarnation = "implausible_incarnation"
	// A probe request about the requester itself or about the helper.
	reasonBadProbe = "bad_probe"
)

// InvalidReasons lists every reason Metrics.InvalidMessage is given.
var InvalidReasons = []string{reasonOversized, reasonMalformed, reasonWrongMesh, reasonForgedSender,
	reasonPayloadTooLarge, reasonNotAllowed, reasonBadLeave, reasonBadNotice, reasonBadState,
	reasonImplausibleIncarnation, reasonBadProbe}

// validateHeartbeat is the heartbeat topic validator. An accepted message
// carries its decoded *heartbeat in ValidatorData.
func (m *Mesh) validateHeartbeat(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	if r := m.precheck(msg); r != "" {
		return m.reject(r, from, msg)
	}
	h, err := decodeHeartbeat(msg.Data)
	switch {
	case err != nil:
		return m.reject(reasonMalformed, from, msg)
	case h.Mesh != m.cfg.Mesh:
		return m.reject(reasonWrongMesh, from, msg)
	case h.Sender != msg.GetFrom():
		return m.reject(reasonForgedSender, from, msg)
	case len(h.Payload) > m.cfg.MaxPayload:
		return m.reject(reasonPayloadTooLarge, from, msg)
	case h.State != Alive && h.State != Left:
		return m.reject(reasonBadState, from, msg)
	}
	msg.ValidatorData = h
	return pubsub.ValidationAccept
}

// validateFailure is the failure topic validator. An accepted message carries
// its decoded *failureNotice in ValidatorData.
func (m *Mesh) validateFailure(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	if r := m.precheck(msg); r != "" {
		return m.reject(r, from, msg)
	}
	f, err := decodeFailure(msg.Data)
	switch {
	case err != nil:
		return m.reject(reasonMalformed, from, msg)
	case f.Mesh != m.cfg.Mesh:
		return m.reject(reasonWrongMesh, from, msg)
	case f.Sender != msg.GetFrom():
		return m.reject(reasonForgedSender, from, msg)
	case f.Kind == Left && f.Subject != f.Sender:
		return m.reject(reasonBadLeave, from, msg)
	case f.Kind != Left && f.Subject == f.Sender:
		return m.reject(reasonBadNotice, from, msg)
	case f.Incarnation == math.MaxUint64:
		// No member could refute it; the bound against the subject's
		// known incarnation is checked where that is known (table,
		// refute).
		return m.reject(reasonImplausibleIncarnation, from, msg)
	}
	msg.ValidatorData = f
	return pubsub.ValidationAccept
}

// precheck applies the checks common to all mesh topics.
func (m *Mesh) precheck(msg *pubsub.Message) string {
	if len(msg.Data) > m.cfg.MaxMessageSize {
		return reasonOversized
	}
	if a := msg.GetFrom(); m.allow != nil && a != m.self && !m.allow[a] {
		return reasonNotAllowed
	}
	return ""
}

func (m *Mesh) reject(reason string, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	m.metrics.InvalidMessage(reason)
	m.logger.Warn("invalid message rejected", "reason", reason, "author", msg.GetFrom(), "peer", from,
		"topic", msg.GetTopic(), "bytes", len(msg.Data))
	return pubsub.ValidationReject
}
