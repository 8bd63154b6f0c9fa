package localapi

import "time"

// Status is a node's report of itself, the mesh it sees and its round
// state: the answer to op "status" (Response.Status) and what `ringmesh
// status --json` prints. Its keys are part of the API (the Python client
// reads them): append-only.
type Status struct {
	Mesh string `json:"mesh"`
	// Private: peers need the mesh secret to connect (SecretFile, or the
	// --psk file); false only with --insecure-open-mesh.
	Private    bool   `json:"private"`
	SecretFile string `json:"secret_file,omitempty"`
	// MetricsAddr is where /metrics is served (--metrics-addr), if at all.
	MetricsAddr string     `json:"metrics_addr,omitempty"`
	Self        SelfStatus `json:"self"`
	// Lanes: how this node's all-reduce lanes ran (mode tls, plaintext
	// under --trusted-network, or off) since it started.
	Lanes   LaneStats      `json:"lanes"`
	Members []MemberStatus `json:"members"`
	Rounds  RoundsStatus   `json:"rounds"`
	// StateCheck: how the trainer's model state compares with the other
	// members' (PROTOCOL.md, "State checks").
	StateCheck StateCheckStatus `json:"state_check"`
	// Training: how this node's trainer trains, from its last applied
	// all-reduce (zero before one).
	Training TrainingStatus `json:"training"`
}

// TrainingStatus is the trainer's mode as its last applied all-reduce
// showed it.
type TrainingStatus struct {
	// Mode is "every_step" (a round per training step) or "diloco" (a
	// round per outer step of SyncEvery inner steps); "" before a round.
	Mode      string `json:"mode"`
	SyncEvery int    `json:"sync_every,omitempty"`
	Wire      string `json:"wire,omitempty"`
	// Step is the step (the outer step for DiLoCo) of that round, Members
	// its ring.
	Step    uint64 `json:"step"`
	Members int    `json:"members"`
	// WireBytes is the buffer's size on the wire; SentBytes what a ring
	// member sends for it (2(n-1)/n times WireBytes, framing aside):
	// the bytes per step, or per outer step.
	WireBytes int64 `json:"wire_bytes"`
	SentBytes int64 `json:"sent_bytes"`
}

// MaxSyncEvery bounds Request.SyncEvery.
const MaxSyncEvery = 1 << 20

// SelfStatus describes the local node in a status report.
type SelfStatus struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
	// EgressBps and IngressBps are this node's link estimate in bytes per
	// second, from its link probes (0: not measured yet, or
	// --no-link-probe).
	EgressBps  uint64 `json:"egress_Bps"`
	IngressBps uint64 `json:"ingress_Bps"`
	// ProbedOut and ProbedIn count the peers this node's link probes
	// reached, and that probed it: the estimates are the fastest of those.
	ProbedOut int `json:"probed_out"`
	ProbedIn  int `json:"probed_in"`
}

// LaneStats says how this node's all-reduce lanes ran: Direct, Fallback
// and Stream count the lanes it sent (each lane of each round it dialled),
// Refused the inbound lane connections it dropped (no valid token, a
// failed handshake, over the limits), PortsExhausted the lane dials that
// failed because this host had no local port left (each also a Fallback).
type LaneStats struct {
	// Mode is "tls" (direct lanes under libp2p's TLS), "plaintext"
	// (--trusted-network) or "off" (every lane on its libp2p stream).
	Mode           string `json:"mode"`
	Direct         uint64 `json:"direct"`
	Fallback       uint64 `json:"fallback"`
	Stream         uint64 `json:"stream"`
	Refused        uint64 `json:"refused"`
	PortsExhausted uint64 `json:"ports_exhausted"`
}

// MemberStatus is one member of the mesh as the node sees it.
type MemberStatus struct {
	ID string `json:"id"`
	// State is "alive", "suspect", "dead" or "left".
	State       string    `json:"state"`
	Incarnation uint64    `json:"incarnation"`
	Addrs       []string  `json:"addrs"`
	GPUs        []GPU     `json:"gpus"`
	CPUs        int       `json:"cpus"`
	MemoryBytes uint64    `json:"memory_bytes"`
	LastSeen    time.Time `json:"last_seen"`
}

// GPU is one GPU a member advertises.
type GPU struct {
	Name           string `json:"name"`
	UUID           string `json:"uuid"`
	MemoryBytes    uint64 `json:"memory_bytes"`
	UtilizationPct int    `json:"utilization_pct"`
}

// RoundsStatus is the round state in a status report.
type RoundsStatus struct {
	State    string   `json:"state"`
	Reason   string   `json:"reason,omitempty"`
	Epoch    uint64   `json:"epoch"`
	NextStep uint64   `json:"next_step"`
	Members  []string `json:"members"` // the agreed list for the next step
	Applied  uint64   `json:"applied"` // rounds applied since start
	Retries  uint64   `json:"retries"` // extra attempts since start
	Dropped  uint64   `json:"dropped"` // round messages dropped: malformed, or not fitting the sender's role
	// WaitingFor: the members whose trainers' offers of the next step
	// this node, having submitted it, still waits for.
	WaitingFor []string `json:"waiting_for,omitempty"`
	// Plan: each member of the agreed list, its share of the next step's
	// global batch and what its node advertises.
	Plan []PlanEntry `json:"plan"`
}

// PlanEntry is one member of the agreed list in a status report.
type PlanEntry struct {
	ID string `json:"id"`
	// Share is the member's fraction of the next step's global batch.
	Share float64 `json:"share"`
	// SamplesPerSec is its trainer's samples per second (smoothed; 0
	// until known), EgressBps and IngressBps its node's link estimate in
	// bytes per second (0: not measured yet).
	SamplesPerSec float64 `json:"samples_per_s"`
	EgressBps     uint64  `json:"egress_Bps"`
	IngressBps    uint64  `json:"ingress_Bps"`
	// LocalRanks is how many trainer processes (torchrun local ranks) the
	// member's trainer speaks for (0: not known).
	LocalRanks int `json:"local_ranks,omitempty"`
}

// StateCheckStatus is the state checks in a status report.
type StateCheckStatus struct {
	// Last is the last comparison decided (null: none yet); Verdict the
	// last one with a verdict (another member reported its step).
	Last    *StateCheck `json:"last"`
	Verdict *StateCheck `json:"verdict"`
	// Diverged: Verdict found this trainer's state diverged from the
	// mesh's majority (ringmesh_state_diverged).
	Diverged bool `json:"diverged"`
	// Reported is the step of the trainer's last report (0: none).
	Reported uint64 `json:"reported"`
	// Checks counts the comparisons by result (agree, diverged,
	// unchecked: no other member reported the step) since the node
	// started; Resyncs the trainer's joins to re-sync its state.
	Checks  map[string]uint64 `json:"checks"`
	Resyncs uint64            `json:"resyncs"`
}
