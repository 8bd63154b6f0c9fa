package meshtrain

import "errors"

var (
	// ErrConfig is wrapped by Config.Validate errors.
	ErrConfig = errors.New("meshtrain: invalid config")
	// ErrProtocol is returned (wrapped) when the node answers something the
	// loop cannot follow, such as a result for another step.
	ErrProtocol = errors.New("meshtrain: unexpected node response")
)
