package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ringmesh/ringmesh/internal/atomicfile"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// stateFile holds what the rounds machine must not forget across a
// restart (rounds.Durable), written atomically before the messages that
// depend on it are sent.
const stateFile = "rounds.state"

// savedState is the file's content: the machine's durable state, plus the
// kernel boot ID and buffer length that say whether the result buffer
// (result.f32, not fsynced) still holds the result Durable.Result names: it
// does after a process crash (the page cache keeps it), not after a reboot.
type savedState struct {
	Boot      string
	ResultLen uint64
	Durable   rounds.Durable
}

const stateVersion = 1

func encodeState(s savedState) ([]byte, error) {
	d := s.Durable
	b := []byte{stateVersion}
	var err error
	b = append(append(b, byte(len(s.Boot))), s.Boot...)
	b = binary.BigEndian.AppendUint64(b, s.ResultLen)
	b = binary.BigEndian.AppendUint64(b, d.Epoch)
	b = binary.BigEndian.AppendUint64(b, d.Step)
	if d.List != nil {
		b = append(b, 1)
		if b, err = appendValue(b, rounds.Value{Ring: d.List}); err != nil {
			return nil, err
		}
	} else {
		b = append(b, 0)
	}
	if b, err = appendBallot(b, d.Promised); err != nil {
		return nil, err
	}
	if b, err = appendBallot(b, d.Accepted); err != nil {
		return nil, err
	}
	var flags byte
	if d.Value != nil {
		flags |= 1
	}
	if d.Result != nil {
		flags |= 2
	}
	if d.Last != nil {
		flags |= 4
	}
	b = append(b, flags)
	for _, v := range []*rounds.Value{d.Value, d.Result} {
		if v != nil {
			if b, err = appendValue(b, *v); err != nil {
				return nil, err
			}
		}
	}
	if d.Last != nil {
		b = binary.BigEndian.AppendUint64(b, d.Last.Step)
		if b, err = appendValue(b, d.Last.Value); err != nil {
			return nil, err
		}
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...), nil
}

func decodeState(b []byte) (savedState, error) {
	var s savedState
	if len(b) < 1+sha256.Size || b[0] != stateVersion {
		return s, errors.New("node: round state: unknown format")
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if want := sha256.Sum256(body); !bytes.Equal(sum, want[:]) {
		return s, errors.New("node: round state: checksum mismatch")
	}
	dec := &decoder{b: body[1:]}
	if l := dec.bytes(1); l != nil {
		s.Boot = string(dec.bytes(int(l[0])))
	}
	s.ResultLen = dec.u64()
	d := &s.Durable
	d.Epoch, d.Step = dec.u64(), dec.u64()
	if has := dec.bytes(1); has != nil && has[0] == 1 {
		d.List = dec.value().Ring
	}
	d.Promised, d.Accepted = dec.ballot(), dec.ballot()
	flags := dec.bytes(1)
	if dec.err == nil && flags[0]&1 != 0 {
		d.Value = dec.value()
	}
	if dec.err == nil && flags[0]&2 != 0 {
		d.Result = dec.value()
	}
	if dec.err == nil && flags[0]&4 != 0 {
		step := dec.u64()
		d.Last = &rounds.Decided{Step: step, Value: *dec.value()}
	}
	if dec.err != nil {
		return savedState{}, fmt.Errorf("node: round state: %w", dec.err)
	}
	return s, nil
}

// loadState reads the saved state of dataDir; a node that never was a
// member has none (the zero state).
func loadState(dataDir string) (savedState, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return savedState{}, nil
	}
	if err != nil {
		return savedState{}, fmt.Errorf("node: round state: %w", err)
	}
	return decodeState(b)
}

// saveState writes s atomically and durably (temporary file, fsync,
// rename, fsync of the directory).
func saveState(dataDir string, s savedState) error {
	b, err := encodeState(s)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dataDir, stateFile), b, 0o600); err != nil {
		return fmt.Errorf("node: round state: %w", err)
	}
	return nil
}

// bootID names this boot of the kernel ("" where /proc does not say).
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
