package mesh

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// State is a member's state in the view.
type State uint8

// Member states. The numeric values are part of the wire format
// (append-only).
const (
	// Alive: heartbeats arrive.
	Alive State = 1
	// Suspect: heartbeats stopped, the connection closed or a stream to it
	// failed; it is being probed.
	Suspect State = 2
	// Dead: declared failed by a probe or a failure notice.
	Dead State = 3
	// Left: announced a graceful leave.
	Left State = 4
)

var stateNames = map[State]string{Alive: "alive", Suspect: "suspect", Dead: "dead", Left: "left"}

// String returns "alive", "suspect", "dead" or "left".
func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// MarshalText encodes the state as its name.
func (s State) MarshalText() ([]byte, error) {
	if _, ok := stateNames[s]; !ok {
		return nil, fmt.Errorf("%w: state %d", ErrInvalidState, uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText decodes a state name.
func (s *State) UnmarshalText(b []byte) error {
	for st, n := range stateNames {
		if n == string(b) {
			*s = st
			return nil
		}
	}
	return fmt.Errorf("%w: %q", ErrInvalidState, b)
}

func (s State) valid() bool { _, ok := stateNames[s]; return ok }

// Member is one node as seen by the local node.
type Member struct {
	ID          peer.ID
	State       State
	Incarnation uint64
	Addrs       []multiaddr.Multiaddr
	Caps        Capabilities
	Payload     []byte
	// LastSeen is when the local node last heard from the member (its
	// latest heartbeat; now for self).
	LastSeen time.Time
}

// MemberJSON is the JSON shape of a member, as `ringmesh status --json`
// prints it.
type MemberJSON struct {
	ID          string    `json:"id"`
	State       State     `json:"state"`
	Incarnation uint64    `json:"incarnation"`
	Addrs       []string  `json:"addrs"`
	GPUs        []GPU     `json:"gpus"`
	CPUs        int       `json:"cpus"`
	MemoryBytes uint64    `json:"memory_bytes"`
	Payload     []byte    `json:"payload,omitempty"`
	LastSeen    time.Time `json:"last_seen"`
}

// JSON converts m to its JSON shape.
func (m Member) JSON() MemberJSON {
	j := MemberJSON{
		ID:          m.ID.String(),
		State:       m.State,
		Incarnation: m.Incarnation,
		Addrs:       make([]string, 0, len(m.Addrs)),
		GPUs:        m.Caps.GPUs,
		CPUs:        m.Caps.CPUs,
		MemoryBytes: m.Caps.MemoryBytes,
		Payload:     m.Payload,
		LastSeen:    m.LastSeen.UTC(),
	}
	for _, a := range m.Addrs {
		j.Addrs = append(j.Addrs, a.String())
	}
	if j.GPUs == nil {
		j.GPUs = []GPU{}
	}
	return j
}

// MarshalJSON encodes m as MemberJSON.
func (m Member) MarshalJSON() ([]byte, error) { return json.Marshal(m.JSON()) }

// View is a snapshot of the membership. Members are sorted by ID and include
// the local node (always Alive). A View is never modified after it is
// handed out; callers must not modify it either.
type View struct {
	Self    peer.ID
	Members []Member
}

// Alive returns the IDs of the alive members, self included, sorted.
func (v View) Alive() []peer.ID {
	var ids []peer.ID
	for _, m := range v.Members {
		if m.State == Alive {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// Member returns the member with the given ID.
func (v View) Member(id peer.ID) (Member, bool) {
	for _, m := range v.Members {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}
