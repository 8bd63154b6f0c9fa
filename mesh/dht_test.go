package mesh

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/protocol"
)

// TestDHTDiscovery: with the DHT on, nodes run a /ringmesh kad-dht server
// bootstrapped only from the join address, form the mesh, and shut down
// without leaking goroutines (TestMain checks).
func TestDHTDiscovery(t *testing.T) {
	cfg := localConfig(t.TempDir())
	cfg.DHT = true
	a := startNode(t, cfg, nil)
	nodes := []*testNode{a}
	for range 2 {
		c := localConfig(t.TempDir())
		c.DHT = true
		c.Join = []string{a.joinAddr()}
		nodes = append(nodes, startNode(t, c, nil))
	}
	for _, n := range nodes {
		waitFor(t, "3 alive", func() (bool, string) { return seesAlive(n, nodes...) })
	}
	const kad = protocol.ID("/ringmesh/kad/1.0.0")
	for _, n := range nodes {
		waitFor(t, "kad protocol served", func() (bool, string) {
			for _, p := range n.Host().Mux().Protocols() {
				if p == kad {
					return true, ""
				}
			}
			return false, "protocols: " + fmtProtocols(n.Host().Mux().Protocols())
		})
	}
}

func fmtProtocols(ps []protocol.ID) string {
	s := ""
	for _, p := range ps {
		s += string(p) + " "
	}
	return s
}
