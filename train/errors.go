package train

import "errors"

var (
	// ErrConfig is wrapped by Config.Validate errors.
	ErrConfig = errors.New("train: invalid config")
	// ErrState is wrapped by UnmarshalState errors: bad magic, version,
	// length or checksum.
	ErrState = errors.New("train: invalid state")
	// ErrFingerprint is returned (wrapped) by UnmarshalState when the state
	// was saved with a different Config.
	ErrFingerprint = errors.New("train: state from a different config")
	// ErrSize is returned (wrapped) when a gradient or index does not fit
	// the model or data set.
	ErrSize = errors.New("train: size mismatch")
)
