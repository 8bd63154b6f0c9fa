package node

import (
	"context"
	"encoding/json"

	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/client"
)

// SelfJSON describes the local node in a status report.
type SelfJSON struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
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
}

// StatusJSON is what `ringmesh status --json` prints.
type StatusJSON struct {
	Mesh string `json:"mesh"`
	// Private: peers need the mesh secret to connect (SecretFile, or the
	// --psk file); false only with --insecure-open-mesh.
	Private    bool   `json:"private"`
	SecretFile string `json:"secret_file,omitempty"`
	// MetricsAddr is where /metrics is served (--metrics-addr), if at all.
	MetricsAddr string            `json:"metrics_addr,omitempty"`
	Self        SelfJSON          `json:"self"`
	Members     []mesh.MemberJSON `json:"members"`
	Rounds      RoundsJSON        `json:"rounds"`
}

// Status reports the node's view of the mesh and its round state.
func (n *Node) Status() StatusJSON {
	v := n.mesh.View()
	st := StatusJSON{Mesh: n.cfg.Mesh.Mesh, Self: SelfJSON{ID: n.host.ID().String(), Addrs: []string{}},
		Private: n.cfg.Mesh.PSKFile != "", SecretFile: n.cfg.Mesh.PSKFile, MetricsAddr: n.metricsSrv.Addr()}
	for _, a := range n.host.Addrs() {
		st.Self.Addrs = append(st.Self.Addrs, a.String()+"/p2p/"+n.host.ID().String())
	}
	for _, m := range v.Members {
		j := m.JSON()
		j.Payload = nil
		st.Members = append(st.Members, j)
	}
	sn := n.drv.snap.Load()
	st.Rounds = RoundsJSON{State: sn.state, Reason: sn.reason, Epoch: sn.epoch, NextStep: sn.step, Members: idStrings(sn.list),
		Applied: n.metrics.rounds.Load(), Retries: n.metrics.retries.Load(),
		Dropped: sn.dropped + n.drv.inDropped.Load() + n.drv.badMessage.Load()}
	if st.Rounds.Members == nil {
		st.Rounds.Members = []string{}
	}
	return st
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
