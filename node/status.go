package node

import (
	"context"
	"encoding/json"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// SelfJSON describes the local node in a status report.
type SelfJSON struct {
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

// RoundsJSON is the round state in a status report.
type RoundsJSON struct {
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
	Plan []PlanJSON `json:"plan"`
}

// PlanJSON is one member of the agreed list in a status report.
type PlanJSON struct {
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

// StatusJSON is what `ringmesh status --json` prints.
type StatusJSON struct {
	Mesh string `json:"mesh"`
	// Private: peers need the mesh secret to connect (SecretFile, or the
	// --psk file); false only with --insecure-open-mesh.
	Private    bool   `json:"private"`
	SecretFile string `json:"secret_file,omitempty"`
	// MetricsAddr is where /metrics is served (--metrics-addr), if at all.
	MetricsAddr string   `json:"metrics_addr,omitempty"`
	Self        SelfJSON `json:"self"`
	// Lanes: how this node's all-reduce lanes ran (mode tls, plaintext
	// under --trusted-network, or off) since it started.
	Lanes   allreduce.LaneStats `json:"lanes"`
	Members []mesh.MemberJSON   `json:"members"`
	Rounds  RoundsJSON          `json:"rounds"`
	// StateCheck: how the trainer's model state compares with the other
	// members' (PROTOCOL.md, "State checks").
	StateCheck StateCheckJSON `json:"state_check"`
}

// Status reports the node's view of the mesh and its round state.
func (n *Node) Status() StatusJSON {
	v := n.mesh.View()
	st := StatusJSON{Mesh: n.cfg.Mesh.Mesh, Self: SelfJSON{ID: n.host.ID().String(), Addrs: []string{}},
		Private: n.cfg.Mesh.PSKFile != "", SecretFile: n.cfg.Mesh.PSKFile, MetricsAddr: n.metricsSrv.Addr(),
		Lanes: n.tr.LaneStats()}
	for _, a := range n.host.Addrs() {
		st.Self.Addrs = append(st.Self.Addrs, a.String()+"/p2p/"+n.host.ID().String())
	}
	for _, m := range v.Members {
		j := m.JSON()
		j.Payload = nil
		st.Members = append(st.Members, j)
	}
	sn := n.drv.snap.Load()
	st.Self.EgressBps, st.Self.IngressBps = sn.link.Egress, sn.link.Ingress
	st.Self.ProbedOut, st.Self.ProbedIn = n.probe.probed()
	st.Rounds = RoundsJSON{State: sn.state, Reason: sn.reason, Epoch: sn.epoch, NextStep: sn.step, Members: idStrings(sn.list),
		Applied: count(n.metrics.roundsApplied), Retries: count(n.metrics.roundRetries),
		Dropped: sn.dropped + n.drv.inDropped.Load() + n.drv.badMessage.Load(), WaitingFor: idStrings(sn.waitingFor)}
	if st.Rounds.Members == nil {
		st.Rounds.Members = []string{}
	}
	ads := map[peer.ID]payload{}
	for _, m := range v.Members {
		if pl, ok := decodePayload(m.Payload); ok {
			ads[m.ID] = pl
		}
	}
	st.StateCheck = n.check.status()
	st.Rounds.Plan = []PlanJSON{}
	for i, id := range sn.list {
		p := PlanJSON{ID: id.String()}
		if i < len(sn.shares) {
			p.Share = float64(sn.shares[i]) / rounds.ShareUnits
		}
		if id == n.host.ID() {
			p.SamplesPerSec, p.EgressBps, p.IngressBps = sn.samples, sn.link.Egress, sn.link.Ingress
			p.LocalRanks = int(n.localRanks.Load())
		} else if pl, ok := ads[id]; ok {
			p.SamplesPerSec, p.EgressBps, p.IngressBps, p.LocalRanks = pl.Samples, pl.Egress, pl.Ingress, pl.LocalRanks
		}
		st.Rounds.Plan = append(st.Rounds.Plan, p)
	}
	return st
}

// ShortID is libp2p's ShortString of a peer ID string (the form its logs
// use), or the string itself when it is not one.
func ShortID(id string) string {
	if p, err := peer.Decode(id); err == nil {
		return p.ShortString()
	}
	return id
}

// ReadStatus asks the node whose data dir is dataDir for its status over
// the local socket (what `ringmesh status --json` prints).
func ReadStatus(ctx context.Context, dataDir string) (StatusJSON, error) {
	var st StatusJSON
	c, err := client.Dial(ctx, dataDir)
	if err != nil {
		return st, err
	}
	defer c.Close()
	resp, err := c.Status(ctx)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(resp.Status, &st)
}
