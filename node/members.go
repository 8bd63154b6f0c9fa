package node

import (
	"encoding/json"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// payload is what a node advertises in the heartbeat payload slot (JSON,
// keys in PROTOCOL.md). It is decoded from untrusted gossip: every field is
// checked before use, and the rounds machine uses it only as a hint of
// whom to wait for, never to change the agreed list.
type payload struct {
	State string `json:"s"`
	Epoch uint64 `json:"e,omitempty"`
	Step  uint64 `json:"k"`           // next step (member) or start step (forming)
	List  string `json:"l,omitempty"` // hash prefix of the agreed list, or of the forming set
}

const maxPayload = 1024

func decodePayload(b []byte) (payload, bool) {
	var p payload
	if len(b) == 0 || len(b) > maxPayload || json.Unmarshal(b, &p) != nil {
		return payload{}, false
	}
	switch p.State {
	case rounds.StateIdle, rounds.StateForming, rounds.StateJoining, rounds.StateTraining, rounds.StateWaiting:
		return p, true
	}
	return payload{}, false
}

func encodePayload(i rounds.Info) []byte {
	b, _ := json.Marshal(payload{State: i.State, Epoch: i.Epoch, Step: i.Step, List: i.List})
	return b
}

// viewPeers turns the mesh view into the machine's view: alive peers are
// live; their payload is their Info. A suspect peer is not: the mesh
// declares a member dead only once others corroborate, which takes a
// suspicion timeout, but a member this node cannot reach (its connection
// closed, its probes and the indirect ones failed) cannot take part in a
// ring now. The machine's safety never depends on the view, only how soon
// it stops waiting for a peer.
func viewPeers(v mesh.View) []rounds.Peer {
	out := make([]rounds.Peer, 0, len(v.Members))
	for _, m := range v.Members {
		if m.ID == v.Self {
			continue
		}
		p := rounds.Peer{ID: m.ID, Live: m.State == mesh.Alive}
		if pl, ok := decodePayload(m.Payload); ok {
			p.Info = rounds.Info{State: pl.State, Epoch: pl.Epoch, Step: pl.Step, List: pl.List}
		}
		out = append(out, p)
	}
	return out
}

func idStrings(ids []peer.ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}
