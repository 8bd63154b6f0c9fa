package checkpoint

import (
	"errors"
	"fmt"
)

// MaxRunIDLen bounds a run ID in bytes.
const MaxRunIDLen = 64

// ValidateRunID checks a run ID: empty (no run), or 1 to MaxRunIDLen
// bytes of printable ASCII without spaces ('!' to '~'), so it is safe in
// logs, file names and JSON.
func ValidateRunID(run string) error {
	if len(run) > MaxRunIDLen {
		return fmt.Errorf("checkpoint: run ID of %d bytes exceeds %d", len(run), MaxRunIDLen)
	}
	for i := 0; i < len(run); i++ {
		if c := run[i]; c < '!' || c > '~' {
			return fmt.Errorf("checkpoint: run ID %q: byte %#x at %d is not printable ASCII", run, c, i)
		}
	}
	return nil
}

// decodeRunID reads a run ID encoded as one length byte L (1 to
// MaxRunIDLen) and L bytes from the start of b.
func decodeRunID(b []byte) (string, error) {
	if len(b) < 1 {
		return "", errors.New("run ID length missing")
	}
	n := int(b[0])
	switch {
	case n == 0:
		return "", errors.New("empty run ID in an encoding that carries one")
	case n > MaxRunIDLen:
		return "", fmt.Errorf("run ID length %d exceeds %d", n, MaxRunIDLen)
	case len(b) < 1+n:
		return "", fmt.Errorf("run ID of %d bytes truncated to %d", n, len(b)-1)
	}
	run := string(b[1 : 1+n])
	return run, ValidateRunID(run)
}
