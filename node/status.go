package node

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/localapi"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// Status reports the node's view of the mesh and its round state.
func (n *Node) Status() localapi.Status {
	v := n.mesh.View()
	st := localapi.Status{Mesh: n.cfg.Mesh.Mesh, Self: localapi.SelfStatus{ID: n.host.ID().String(), Addrs: []string{}},
		Private: n.cfg.Mesh.PSKFile != "", SecretFile: n.cfg.Mesh.PSKFile, MetricsAddr: n.metricsSrv.Addr(),
		Lanes: localapi.LaneStats(n.tr.LaneStats())}
	for _, a := range n.host.Addrs() {
		st.Self.Addrs = append(st.Self.Addrs, a.String()+"/p2p/"+n.host.ID().String())
	}
	for _, m := range v.Members {
		st.Members = append(st.Members, memberStatus(m))
	}
	sn := n.drv.Snapshot()
	st.Self.EgressBps, st.Self.IngressBps = sn.Link.Egress, sn.Link.Ingress
	st.Self.ProbedOut, st.Self.ProbedIn = n.probe.probed()
	st.Rounds = localapi.RoundsStatus{State: sn.State, Reason: sn.Reason, Epoch: sn.Epoch, NextStep: sn.Step, Members: idStrings(sn.List),
		Applied: count(n.metrics.roundsApplied), Retries: count(n.metrics.roundRetries),
		Dropped: sn.Dropped, WaitingFor: idStrings(sn.WaitingFor)}
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
	st.Rounds.Plan = []localapi.PlanEntry{}
	for i, id := range sn.List {
		p := localapi.PlanEntry{ID: id.String()}
		if i < len(sn.Shares) {
			p.Share = float64(sn.Shares[i]) / rounds.ShareUnits
		}
		if id == n.host.ID() {
			p.SamplesPerSec, p.EgressBps, p.IngressBps = sn.Samples, sn.Link.Egress, sn.Link.Ingress
			p.LocalRanks = int(n.localRanks.Load())
		} else if pl, ok := ads[id]; ok {
			p.SamplesPerSec, p.EgressBps, p.IngressBps, p.LocalRanks = pl.Samples, pl.Egress, pl.Ingress, pl.LocalRanks
		}
		st.Rounds.Plan = append(st.Rounds.Plan, p)
	}
	return st
}

// memberStatus is m in a status report. (Status converts mesh.GPU and
// allreduce.LaneStats to their wire types, which have the same fields: a
// field added to either fails to compile until the wire type says how it
// is reported.)
func memberStatus(m mesh.Member) localapi.MemberStatus {
	s := localapi.MemberStatus{ID: m.ID.String(), State: m.State.String(), Incarnation: m.Incarnation,
		Addrs: make([]string, 0, len(m.Addrs)), GPUs: make([]localapi.GPU, 0, len(m.Caps.GPUs)),
		CPUs: m.Caps.CPUs, MemoryBytes: m.Caps.MemoryBytes, LastSeen: m.LastSeen.UTC()}
	for _, a := range m.Addrs {
		s.Addrs = append(s.Addrs, a.String())
	}
	for _, g := range m.Caps.GPUs {
		s.GPUs = append(s.GPUs, localapi.GPU(g))
	}
	return s
}

// ShortID is libp2p's ShortString of a peer ID string (the form its logs
// use), or the string itself when it is not one.
func ShortID(id string) string {
	if p, err := peer.Decode(id); err == nil {
		return p.ShortString()
	}
	return id
}
