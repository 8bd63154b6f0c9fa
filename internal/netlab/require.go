package netlab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// ErrUnavailable is wrapped by the reason Require skips for.
var ErrUnavailable = errors.New("netlab: lab unavailable")

// requiredTools are the programs a lab runs.
var requiredTools = []string{"ip", "tc", "nft"}

// env is what checkEnv looks at; a seam so the checks can be tested without
// changing uid or PATH.
type env struct {
	euid     int
	lookPath func(string) (string, error)
	// probe creates and deletes a namespace.
	probe func() error
}

// checkEnv returns nil when a lab can be built, else an error wrapping
// ErrUnavailable that says why.
func checkEnv(e env) error {
	if e.euid != 0 {
		return fmt.Errorf("%w: not root (euid %d)", ErrUnavailable, e.euid)
	}
	var missing []string
	for _, tool := range requiredTools {
		if _, err := e.lookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s not found (apt-get install -y iproute2 nftables)",
			ErrUnavailable, strings.Join(missing, ", "))
	}
	if err := e.probe(); err != nil {
		return fmt.Errorf("%w: cannot create a network namespace: %w", ErrUnavailable, err)
	}
	return nil
}

var (
	availOnce sync.Once
	availErr  error
)

// Available reports whether a lab can be built here; the result of the first
// call is cached.
func Available() error {
	availOnce.Do(func() {
		availErr = checkEnv(env{euid: os.Geteuid(), lookPath: exec.LookPath, probe: probeNetns})
	})
	return availErr
}

// Require skips t with a clear message unless a lab can be built: root, ip,
// tc and nft present, and a namespace can be created.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("netlab: skipping, a lab needs root, iproute2 (ip, tc) and nftables (nft): %v", err)
	}
}

// probeNetns creates and deletes a uniquely named namespace.
func probeNetns() error {
	name := fmt.Sprintf("%s-%d-%s-probe", DefaultConfig().Prefix, os.Getpid(), randSuffix())
	if err := ipCmd("netns", "add", name); err != nil {
		return err
	}
	return ipCmd("netns", "del", name)
}

// randSuffix returns 4 random hex digits.
func randSuffix() string {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ipCmd runs ip with args and returns its output in the error.
func ipCmd(args ...string) error {
	return runTool("ip", args...)
}

// runTool runs a tool and returns an error carrying its combined output.
func runTool(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
