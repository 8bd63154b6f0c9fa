package node

import (
	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/node/roundrun"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// machineConfig is the rounds machine's part of c.
func machineConfig(c Config) rounds.Config {
	return rounds.Config{
		MinMembers:     c.MinMembers,
		FormWait:       c.FormWait,
		FormTimeout:    c.FormTimeout,
		Resend:         c.Resend,
		PhaseTimeout:   c.CommitTimeout,
		RetryBackoff:   c.RetryBackoff,
		JoinPoll:       c.JoinPoll,
		JoinTTL:        c.JoinRequestTTL,
		TrainerTimeout: c.TrainerTimeout,
		OfferWait:      c.TrainerTimeout,
	}
}

// newDriver builds the round driver over the node's parts: the mesh
// (views, suspicions, the heartbeat payload, whose format members.go
// owns), the all-reduce and the round state and result buffer opened
// from the data dir. Open wires its streams and link estimates.
func (n *Node) newDriver(store *roundrun.Store, result *roundrun.ResultBuf, reducer *allreduce.Reducer) (*roundrun.Driver, error) {
	cfg := roundrun.Config{
		Self:       n.host.ID(),
		Mesh:       n.cfg.Mesh.Mesh,
		Machine:    machineConfig(n.cfg),
		Tick:       n.cfg.Tick,
		RPCTimeout: n.cfg.RPCTimeout,
		Seeded:     len(n.cfg.Mesh.Join) > 0,
	}
	return roundrun.New(cfg, roundrun.Deps{
		Host:  n.host,
		Mesh:  n.mesh,
		Peers: viewPeers,
		Publish: func(i rounds.Info, samples float64) error {
			return n.setInfo(i, samples, int(n.localRanks.Load()))
		},
		Reducer: reducer,
		Store:   store,
		Result:  result,
		Metrics: n.metrics,
		Logger:  n.log,
	})
}
