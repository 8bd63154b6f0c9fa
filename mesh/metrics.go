package mesh

import "time"

// Metrics receives the mesh's measurements. node implements it with
// Prometheus; a nil Metrics passed to Open means NopMetrics. Methods are
// called from the mesh's goroutines and must not block.
type Metrics interface {
	// InvalidMessage counts a message dropped because it does not fit its
	// sender's role: a gossip message rejected by a topic validator, a
	// failure notice the membership table or the refutation drops, or a
	// probe request. reason is a short constant: "oversized", "malformed",
	// "wrong_mesh", "forged_sender", "payload_too_large", "not_allowed",
	// "bad_leave", "bad_notice", "bad_state", "implausible_incarnation",
	// "bad_probe".
	InvalidMessage(reason string)
	// Transition counts a member changing state (from is 0 for a new member).
	Transition(from, to State)
	// Probe records a direct probe of a member being checked (not the
	// pings this node makes as a helper for another's indirect probe).
	Probe(ok bool, rtt time.Duration)
}

// NopMetrics is a Metrics that does nothing.
type NopMetrics struct{}

// InvalidMessage implements Metrics.
func (NopMetrics) InvalidMessage(string) {}

// Transition implements Metrics.
func (NopMetrics) Transition(State, State) {}

// Probe implements Metrics.
func (NopMetrics) Probe(bool, time.Duration) {}
