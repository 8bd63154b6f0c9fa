package mesh

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestFiveNodesBootstrapCrash: 5 hosts join through one bootstrap and all
// see 5 alive members; the bootstrap crashes (Close, no leave) and the other
// 4 agree it is dead and keep a full view of each other.
func TestFiveNodesBootstrapCrash(t *testing.T) {
	boot := startNode(t, localConfig(t.TempDir()), nil)
	nodes := []*testNode{boot}
	for range 4 {
		cfg := localConfig(t.TempDir())
		cfg.Join = []string{boot.joinAddr()}
		nodes = append(nodes, startNode(t, cfg, nil))
	}
	for _, n := range nodes {
		waitFor(t, "5 alive members", func() (bool, string) { return seesAlive(n, nodes...) })
	}
	boot.crash(t)
	survivors := nodes[1:]
	for _, n := range survivors {
		waitFor(t, "bootstrap dead", func() (bool, string) {
			st, _ := stateOf(n, boot.Self())
			return st == Dead, short(n.Self()) + " sees bootstrap " + st.String()
		})
	}
	for _, n := range survivors {
		waitFor(t, "4 alive survivors", func() (bool, string) { return seesAlive(n, survivors...) })
		if st, _ := stateOf(n, boot.Self()); st != Dead {
			t.Errorf("%s sees bootstrap %v, want dead", short(n.Self()), st)
		}
	}
}
