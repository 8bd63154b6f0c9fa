package mesh

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/ringmesh/ringmesh/internal/atomicfile"
)

const (
	identityFile    = "identity.key"
	incarnationFile = "incarnation"
)

// loadOrCreateIdentity reads the node's Ed25519 key from dir/identity.key,
// creating it (mode 0600) on first start.
func loadOrCreateIdentity(dir string) (crypto.PrivKey, error) {
	path := filepath.Join(dir, identityFile)
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := crypto.UnmarshalPrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("%w: decode %s: %w", ErrIdentity, path, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("%w: generate key: %w", ErrIdentity, err)
	}
	b, err = crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("%w: encode key: %w", ErrIdentity, err)
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	return k, nil
}

// readIncarnation returns the incarnation stored in dir, 0 if none.
func readIncarnation(dir string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, incarnationFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read incarnation: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse incarnation: %w", err)
	}
	return n, nil
}

// writeIncarnation stores n in dir, atomically and durably.
func writeIncarnation(dir string, n uint64) error {
	b := []byte(strconv.FormatUint(n, 10) + "\n")
	if err := atomicfile.Write(filepath.Join(dir, incarnationFile), b, 0o600); err != nil {
		return fmt.Errorf("write incarnation: %w", err)
	}
	return nil
}

// bumpIncarnation stores and returns the stored incarnation plus one, so a
// restarted node is always newer than any earlier run.
func bumpIncarnation(dir string) (uint64, error) {
	n, err := readIncarnation(dir)
	if err != nil {
		return 0, err
	}
	if n == math.MaxUint64 {
		return 0, fmt.Errorf("incarnation in %s is exhausted: remove the file, and wait ForgetAfter before restarting", dir)
	}
	n++
	if err := writeIncarnation(dir, n); err != nil {
		return 0, err
	}
	return n, nil
}
