package mesh

import "errors"

// Sentinel errors.
var (
	// ErrInvalidConfig wraps every Config.Validate failure.
	ErrInvalidConfig = errors.New("mesh: invalid config")
	// ErrInvalidState is returned for an unknown State value or name.
	ErrInvalidState = errors.New("mesh: invalid state")
	// ErrDecode wraps every wire decoding failure.
	ErrDecode = errors.New("mesh: malformed message")
	// ErrPayloadTooLarge is returned by SetPayload above Config.MaxPayload.
	ErrPayloadTooLarge = errors.New("mesh: payload too large")
	// ErrClosed is returned by calls on a closed Mesh.
	ErrClosed = errors.New("mesh: closed")
	// ErrRunning is returned when Run is called twice.
	ErrRunning = errors.New("mesh: already running")
	// ErrIdentity wraps failures to load or create the node identity.
	ErrIdentity = errors.New("mesh: identity")
)
