package roundrun

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ringmesh/ringmesh/internal/atomicfile"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// The rounds machine's durable state (rounds.Durable) is written before
// the messages that depend on it are sent, several times a round, so its
// cost is on every round's critical path. It lives in two slot files,
// rounds.state.0 and .1, written in turn: each write overwrites the older
// slot in place and syncs it once (fdatasync; no temporary file, rename or
// directory sync, which cost three times as much). A write a crash tore
// fails its checksum, and the other slot holds the state before it, which
// is all that any message sent so far depended on. A sequence number in
// each slot says which is newer. stateFile is the single file (version 1,
// replaced by rename) of earlier versions, read when no slot holds a state.
const (
	stateFile  = "rounds.state"
	stateSlots = 2
)

func slotFile(dataDir string, i int) string {
	return filepath.Join(dataDir, fmt.Sprintf("%s.%d", stateFile, i))
}

// savedState is the file's content: the machine's durable state, plus the
// kernel boot ID and buffer length that say whether the result buffer
// (result.f32, not fsynced) still holds the result Durable.Result names: it
// does after a process crash (the page cache keeps it), not after a reboot.
type savedState struct {
	Boot      string
	ResultLen uint64
	Durable   rounds.Durable
}

const (
	stateVersion1 = 1 // rounds.state: no sequence number
	stateVersion  = 2 // a slot: the sequence number follows the version
)

// encodeState encodes s as the seq'th state: version, sequence number,
// boot ID (u8 length, bytes), result buffer length (u64), the durable
// state (rounds.AppendDurable), and a SHA-256 of all that.
func encodeState(s savedState, seq uint64) ([]byte, error) {
	b := binary.BigEndian.AppendUint64([]byte{stateVersion}, seq)
	b = append(append(b, byte(len(s.Boot))), s.Boot...)
	b = binary.BigEndian.AppendUint64(b, s.ResultLen)
	b, err := rounds.AppendDurable(b, s.Durable)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...), nil
}

// decodeState decodes a state and its sequence number (0 for version 1).
func decodeState(b []byte) (savedState, uint64, error) {
	var s savedState
	if len(b) < 1+sha256.Size || (b[0] != stateVersion && b[0] != stateVersion1) {
		return s, 0, errors.New("node: round state: unknown format")
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if want := sha256.Sum256(body); !bytes.Equal(sum, want[:]) {
		return s, 0, errors.New("node: round state: checksum mismatch")
	}
	rest := body[1:]
	var seq uint64
	if b[0] == stateVersion {
		if len(rest) < 8 {
			return savedState{}, 0, errStateTruncated
		}
		seq, rest = binary.BigEndian.Uint64(rest), rest[8:]
	}
	if len(rest) < 1 || len(rest) < 1+int(rest[0])+8 {
		return savedState{}, 0, errStateTruncated
	}
	s.Boot, rest = string(rest[1:1+rest[0]]), rest[1+rest[0]:]
	s.ResultLen = binary.BigEndian.Uint64(rest)
	d, err := rounds.DecodeDurable(rest[8:])
	if err != nil {
		return savedState{}, 0, fmt.Errorf("node: round state: %w", err)
	}
	s.Durable = d
	return s, seq, nil
}

var errStateTruncated = errors.New("node: round state: truncated")

// Store is the machine's durable state on disk: it writes the state into
// the slot files in turn. Owned by the driver's loop.
type Store struct {
	dir     string
	loaded  savedState // the state OpenStore read
	seq     uint64     // of the newest state on disk
	created [stateSlots]bool
	// legacy: a version-1 file to remove once a slot holds the state.
	legacy bool
}

// OpenStore reads the newest valid state of dataDir for New, and returns
// the store that writes the next ones (openStateStore).
func OpenStore(dataDir string) (*Store, error) {
	st, s, err := openStateStore(dataDir)
	if err != nil {
		return nil, err
	}
	st.loaded = s
	return st, nil
}

// openStateStore reads the newest valid state of dataDir (the zero state
// when it has none: a node that never was a member) and returns the store
// that writes the next ones. A slot that fails its checksum is passed over
// (a write torn by a crash): the other slot holds the state before it. Only
// slot 1 present and torn is the very first write torn: the state before
// it is the version-1 file's, or none. Both slots present and torn cannot
// come from one crash: that is an error, not a state to guess.
func openStateStore(dataDir string) (*Store, savedState, error) {
	st := &Store{dir: dataDir}
	var best savedState
	var found bool
	var present [stateSlots]bool
	var firstErr error
	for i := range stateSlots {
		b, err := os.ReadFile(slotFile(dataDir, i))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, savedState{}, fmt.Errorf("node: round state: %w", err)
		}
		present[i] = true
		s, seq, err := decodeSlot(b)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", slotFile(dataDir, i), err)
			}
			continue
		}
		if !found || seq > st.seq {
			best, st.seq, found = s, seq, true
		}
	}
	st.created = present
	if present[0] || present[1] {
		// A slot created before a crash may not have its directory entry
		// synced yet.
		if err := atomicfile.SyncDir(dataDir); err != nil {
			return nil, savedState{}, fmt.Errorf("node: round state: %w", err)
		}
	}
	if found {
		return st, best, nil
	}
	if present[0] {
		return nil, savedState{}, firstErr
	}
	b, err := os.ReadFile(filepath.Join(dataDir, stateFile))
	switch {
	case err == nil:
		s, _, err := decodeState(b)
		st.legacy = err == nil
		return st, s, err
	case !errors.Is(err, os.ErrNotExist):
		return nil, savedState{}, fmt.Errorf("node: round state: %w", err)
	}
	return st, savedState{}, nil
}

// decodeSlot decodes a slot file: a 4-byte length, then the state (bytes
// after it are an older, longer state's tail).
func decodeSlot(b []byte) (savedState, uint64, error) {
	if len(b) < 4 || uint64(binary.BigEndian.Uint32(b)) > uint64(len(b)-4) {
		return savedState{}, 0, errors.New("node: round state: short slot")
	}
	return decodeState(b[4 : 4+binary.BigEndian.Uint32(b)])
}

// save writes s into the older slot and syncs it: durable on return.
func (st *Store) save(s savedState) error {
	b, err := encodeState(s, st.seq+1)
	if err != nil {
		return err
	}
	i := int((st.seq + 1) % stateSlots)
	f, err := os.OpenFile(slotFile(st.dir, i), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("node: round state: %w", err)
	}
	buf := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(b)), uint32(len(b)))
	_, err = f.WriteAt(append(buf, b...), 0)
	if err == nil {
		err = unix.Fdatasync(int(f.Fd()))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && !st.created[i] {
		// The slot's directory entry is durable only once the directory is.
		err = atomicfile.SyncDir(st.dir)
		st.created[i] = err == nil
	}
	if err != nil {
		return fmt.Errorf("node: round state: %w", err)
	}
	st.seq++
	if st.legacy {
		// The slots hold the state now: the old file must never be read
		// again in their place.
		if err := os.Remove(filepath.Join(st.dir, stateFile)); err == nil || errors.Is(err, os.ErrNotExist) {
			st.legacy = atomicfile.SyncDir(st.dir) != nil
		}
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
