package train

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"math"
)

// State layout: see the package doc.
const (
	stateMagic    = "RMTS"
	stateVersion  = 1
	stateHeader   = 56
	stateTrailer  = 4
	maxParams     = 1 << 26 // 256 MiB of float32
	stateMaxBytes = stateHeader + 8*maxParams + stateTrailer
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// stateFlagDiLoCo marks a DiLoCo trainer's state: the parameters are
// theta_global, the optimizer state the outer momentum and the step counts
// outer steps. The other flag bits are reserved (rejected).
const stateFlagDiLoCo = 1

// Fingerprint is the hex SHA-256 config fingerprint the trainer's states
// carry: Config.Fingerprint, or for DiLoCo that of the Config and the
// Outer together, so that no trainer loads another mode's or H's state.
func (t *Trainer) Fingerprint() string {
	if t.outer == nil {
		return t.cfg.Fingerprint()
	}
	sum := sha256.Sum256([]byte(t.cfg.canonical() + " " + t.outer.cfg.canonical()))
	return hex.EncodeToString(sum[:])
}

// saved returns the vectors and flags the state holds: the parameters and
// the SGD velocity, or for DiLoCo theta_global and the outer momentum (a
// member's theta_local and inner velocity are its own, not the mesh's).
func (t *Trainer) saved() (params, opt []float32, flags uint16) {
	if t.outer == nil {
		return t.model.Params(), t.opt.State(), 0
	}
	return t.outer.global, t.outer.opt.State(), stateFlagDiLoCo
}

// MarshalState returns the trainer's parameters, optimizer state, step and
// config fingerprint in the layout above.
func (t *Trainer) MarshalState() []byte {
	p, s, flags := t.saved()
	b := make([]byte, 0, stateHeader+4*len(p)+4*len(s)+stateTrailer)
	b = append(b, stateMagic...)
	b = binary.BigEndian.AppendUint16(b, stateVersion)
	b = binary.BigEndian.AppendUint16(b, flags)
	fp, _ := hex.DecodeString(t.Fingerprint())
	b = append(b, fp...)
	b = binary.BigEndian.AppendUint64(b, t.step)
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	b = appendFloats(b, p)
	b = appendFloats(b, s)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// UnmarshalState replaces the trainer's parameters, optimizer state and
// step with those in b. b must be a valid state (ErrState otherwise) saved
// with the same Config, and Outer for DiLoCo (ErrFingerprint otherwise); on
// error the trainer is unchanged. A DiLoCo trainer restarts from the
// loaded theta_global with zero inner velocity (Restart).
func (t *Trainer) UnmarshalState(b []byte) error {
	h, err := parseState(b)
	if err != nil {
		return err
	}
	if fp := t.Fingerprint(); h.fingerprint != fp {
		return fmt.Errorf("%w: state %.12s, trainer %.12s", ErrFingerprint, h.fingerprint, fp)
	}
	p, s, flags := t.saved()
	if h.flags != flags {
		return fmt.Errorf("%w: flags %#x, want %#x", ErrState, h.flags, flags)
	}
	if h.params != len(p) || h.opt != len(s) {
		return fmt.Errorf("%w: %d params and %d optimizer floats, want %d and %d",
			ErrState, h.params, h.opt, len(p), len(s))
	}
	body := b[stateHeader:]
	readFloats(p, body)
	readFloats(s, body[4*len(p):])
	t.step = h.step
	t.Restart()
	return nil
}

// StateInfo is what a state's header says.
type StateInfo struct {
	// Step is the number of steps applied.
	Step uint64
	// Fingerprint is the hex config fingerprint.
	Fingerprint string
	// Params and OptState count the floats of each vector.
	Params, OptState int
	// DiLoCo marks a DiLoCo trainer's state: Params are theta_global,
	// OptState the outer momentum and Step counts outer steps.
	DiLoCo bool
}

// ReadStateInfo validates b (framing, lengths, checksum) and returns its
// header, without a trainer.
func ReadStateInfo(b []byte) (StateInfo, error) {
	h, err := parseState(b)
	if err != nil {
		return StateInfo{}, err
	}
	return StateInfo{Step: h.step, Fingerprint: h.fingerprint, Params: h.params, OptState: h.opt,
		DiLoCo: h.flags&stateFlagDiLoCo != 0}, nil
}

type stateHead struct {
	fingerprint string
	flags       uint16
	step        uint64
	params, opt int
}

// parseState checks everything that does not need a trainer; it allocates
// nothing proportional to the claimed sizes.
func parseState(b []byte) (stateHead, error) {
	var h stateHead
	if len(b) < stateHeader+stateTrailer {
		return h, fmt.Errorf("%w: %d bytes, shorter than the header", ErrState, len(b))
	}
	if len(b) > stateMaxBytes {
		return h, fmt.Errorf("%w: %d bytes, more than %d", ErrState, len(b), stateMaxBytes)
	}
	if !bytes.Equal(b[:4], []byte(stateMagic)) {
		return h, fmt.Errorf("%w: bad magic %q", ErrState, b[:4])
	}
	if v := binary.BigEndian.Uint16(b[4:]); v != stateVersion {
		return h, fmt.Errorf("%w: version %d, want %d", ErrState, v, stateVersion)
	}
	h.flags = binary.BigEndian.Uint16(b[6:])
	if h.flags&^stateFlagDiLoCo != 0 {
		return h, fmt.Errorf("%w: flags %#x, only %#x defined", ErrState, h.flags, stateFlagDiLoCo)
	}
	h.fingerprint = hex.EncodeToString(b[8:40])
	h.step = binary.BigEndian.Uint64(b[40:])
	p, s := uint64(binary.BigEndian.Uint32(b[48:])), uint64(binary.BigEndian.Uint32(b[52:]))
	if p > maxParams || s > maxParams {
		return h, fmt.Errorf("%w: %d params and %d optimizer floats, at most %d each", ErrState, p, s, maxParams)
	}
	if want := stateHeader + 4*(p+s) + stateTrailer; uint64(len(b)) != want {
		return h, fmt.Errorf("%w: %d bytes, header says %d", ErrState, len(b), want)
	}
	end := len(b) - stateTrailer
	if got, want := crc32.Checksum(b[:end], castagnoli), binary.BigEndian.Uint32(b[end:]); got != want {
		return h, fmt.Errorf("%w: checksum %08x, want %08x", ErrState, got, want)
	}
	h.params, h.opt = int(p), int(s)
	return h, nil
}

// ParamHash is the hex SHA-256 of the agreed parameters (GlobalParams:
// theta_global for DiLoCo) as little-endian IEEE 754 binary32 bytes (their
// in-memory layout on x86 and ARM, as numpy's '<f4'): equal hashes mean
// bit-identical parameters.
func (t *Trainer) ParamHash() string { return ParamHash(t.GlobalParams()) }

// ParamHash hashes a parameter vector as Trainer.ParamHash does.
func ParamHash(p []float32) string {
	h := sha256.New()
	var buf [4 * 1024]byte
	for len(p) > 0 {
		n := min(len(p), len(buf)/4)
		for i, v := range p[:n] {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
		h.Write(buf[:4*n])
		p = p[n:]
	}
	return hex.EncodeToString(h.Sum(nil))
}

func appendFloats(b []byte, v []float32) []byte {
	for _, f := range v {
		b = binary.BigEndian.AppendUint32(b, math.Float32bits(f))
	}
	return b
}

func readFloats(dst []float32, b []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.BigEndian.Uint32(b[4*i:]))
	}
}

func f32bits(f float32) uint32 { return math.Float32bits(f) }
