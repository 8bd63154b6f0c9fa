package node

import (
	"encoding/json"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/localapi"
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
	// Speed: the trainer's share units per second (rounds.Info.Speed);
	// Samples: its samples per second; Egress, Ingress: the node's link
	// estimate in bytes per second. Hints for planning and status; the
	// proposer holds Speed to its own timings.
	Speed   uint64  `json:"v,omitempty"`
	Samples float64 `json:"r,omitempty"`
	Egress  uint64  `json:"eg,omitempty"`
	Ingress uint64  `json:"in,omitempty"`
	// LocalRanks: how many trainer processes the node's trainer speaks
	// for (status only).
	LocalRanks int `json:"lr,omitempty"`
	// StateEpoch, States: the fingerprints of the model state the node's
	// trainer reported for its last steps of epoch StateEpoch, as
	// [[step, "hash"], ...] newest first (PROTOCOL.md, "State checks").
	// Decoded on their own (decodeStateAds): malformed ones are ignored,
	// the rest of the payload still counts.
	StateEpoch uint64          `json:"he,omitempty"`
	States     json.RawMessage `json:"h,omitempty"`
}

const maxPayload = 1024

// maxLocalRanks bounds the local ranks a payload advertises: a join's.
const maxLocalRanks = localapi.MaxLocalRanks

func decodePayload(b []byte) (payload, bool) {
	var p payload
	if len(b) == 0 || len(b) > maxPayload || json.Unmarshal(b, &p) != nil {
		return payload{}, false
	}
	if !(p.Samples >= 0 && p.Samples < 1e12) || p.LocalRanks < 0 || p.LocalRanks > maxLocalRanks {
		return payload{}, false
	}
	switch p.State {
	case rounds.StateIdle, rounds.StateForming, rounds.StateJoining, rounds.StateTraining, rounds.StateWaiting:
		return p, true
	}
	return payload{}, false
}

func encodePayload(i rounds.Info, samples float64, localRanks int) []byte {
	return encodePayloadStates(i, samples, localRanks, stateAds{})
}

// encodePayloadStates is encodePayload with the trainer's state hashes.
func encodePayloadStates(i rounds.Info, samples float64, localRanks int, st stateAds) []byte {
	p := payload{State: i.State, Epoch: i.Epoch, Step: i.Step, List: i.List,
		Speed: i.Speed, Samples: samples, Egress: i.Link.Egress, Ingress: i.Link.Ingress, LocalRanks: localRanks}
	if len(st.Ads) > 0 {
		p.StateEpoch, p.States = st.Epoch, st.encode()
	}
	b, _ := json.Marshal(p)
	return b
}

// payloadPub is what the node advertises: the round machine's Info (the
// driver publishes it) and the trainer's state hashes (the state check
// does), encoded into one payload whenever either changes.
type payloadPub struct {
	mu         sync.Mutex
	info       rounds.Info
	samples    float64
	localRanks int
	states     stateAds
}

// setInfo publishes the round machine's Info.
func (n *Node) setInfo(i rounds.Info, samples float64, localRanks int) error {
	p := &n.pub
	p.mu.Lock()
	defer p.mu.Unlock()
	p.info, p.samples, p.localRanks = i, samples, localRanks
	return n.mesh.SetPayload(encodePayloadStates(p.info, p.samples, p.localRanks, p.states))
}

// setStates publishes the trainer's state hashes.
func (n *Node) setStates(st stateAds) error {
	p := &n.pub
	p.mu.Lock()
	defer p.mu.Unlock()
	p.states = st
	return n.mesh.SetPayload(encodePayloadStates(p.info, p.samples, p.localRanks, p.states))
}

func (p payload) info() rounds.Info {
	return rounds.Info{State: p.State, Epoch: p.Epoch, Step: p.Step, List: p.List, Speed: p.Speed,
		Link: rounds.Link{Egress: p.Egress, Ingress: p.Ingress}}
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
			p.Info = pl.info()
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
