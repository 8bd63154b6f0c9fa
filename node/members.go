package node

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/mesh"
)

// Node states, as the local API and status report them.
const (
	stateIdle     = "idle"     // no trainer has joined
	stateForming  = "forming"  // a trainer joined; no mesh is training yet
	stateJoining  = "joining"  // asking a training mesh to admit this node
	stateTraining = "training" // a member of the agreed list
	stateWaiting  = "waiting"  // not in the majority of the last agreed list
)

// payload is what a node advertises in the heartbeat payload slot. It is
// decoded from untrusted gossip: every field is checked before use.
type payload struct {
	State string `json:"s"`
	Boot  uint64 `json:"b"` // the incarnation this process started with

	Step uint64 `json:"k"`           // next step (training, waiting) or start step (forming)
	List string `json:"l,omitempty"` // hex prefix of the hash of the agreed list
	Form string `json:"f,omitempty"` // forming: hex prefix of the forming set it sees
}

func decodePayload(b []byte) (payload, bool) {
	var p payload
	if len(b) == 0 || len(b) > 1024 || json.Unmarshal(b, &p) != nil {
		return payload{}, false
	}
	switch p.State {
	case stateIdle, stateForming, stateJoining, stateTraining, stateWaiting:
		return p, true
	}
	return payload{}, false
}

func sortMembers(ms []member) {
	slices.SortFunc(ms, func(a, b member) int { return strings.Compare(string(a.ID), string(b.ID)) })
}

// listHash identifies an ordered member list.
func listHash(ms []member) [32]byte {
	h := sha256.New()
	var b [8]byte
	for _, m := range ms {
		h.Write([]byte{byte(len(m.ID))})
		h.Write([]byte(m.ID))
		binary.BigEndian.PutUint64(b[:], m.Inc)
		h.Write(b[:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func shortHash(h [32]byte) string { return hex.EncodeToString(h[:6]) }

func containsID(ms []member, id peer.ID) bool {
	return slices.ContainsFunc(ms, func(m member) bool { return m.ID == id })
}

func ids(ms []member) []peer.ID {
	out := make([]peer.ID, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func idStrings(ms []member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID.String()
	}
	return out
}

// liveRing returns the members of list that the view shows alive (or only
// suspect: not yet declared dead), running the same process (boot
// incarnation) and still offering rounds (not idle). A member's refutation of
// a false suspicion bumps its mesh incarnation but not its boot incarnation,
// so it stays a member; a restarted process has a new boot incarnation and
// must join again.
//
// quorum is the size of list less the members seen idle: a member that we
// hear say it stopped (its trainer left, hung or disconnected) cannot be
// part of a majority elsewhere, so it no longer counts. A member that is
// silent (crashed or cut off) still counts. The ring may train only while it
// is a strict majority of quorum (hasMajority).
func liveRing(list []member, v mesh.View) (ring []member, quorum int) {
	quorum = len(list)
	for _, m := range list {
		if m.ID == v.Self {
			ring = append(ring, m)
			continue
		}
		vm, ok := v.Member(m.ID)
		if !ok || (vm.State != mesh.Alive && vm.State != mesh.Suspect) {
			continue
		}
		p, ok := decodePayload(vm.Payload)
		if !ok || p.Boot != m.Inc {
			continue
		}
		if p.State == stateIdle {
			quorum--
			continue
		}
		ring = append(ring, m)
	}
	return ring, quorum
}

func hasMajority(ring []member, quorum int) bool { return 2*len(ring) > quorum }

// peerPayload returns the decoded payload of a member of the view.
func peerPayload(v mesh.View, id peer.ID) (mesh.Member, payload, bool) {
	vm, ok := v.Member(id)
	if !ok || (vm.State != mesh.Alive && vm.State != mesh.Suspect) {
		return vm, payload{}, false
	}
	p, ok := decodePayload(vm.Payload)
	return vm, p, ok
}
