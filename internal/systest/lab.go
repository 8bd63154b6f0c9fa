package systest

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/netlab"
)

// LabCluster starts a node in each of the first n hosts of lab (ip netns
// exec), listening on the host's address, data dirs root/0..n-1; every node
// after the first is given --join to the first. args are added to each
// node's flags (no LocalArgs: pass --no-mdns etc. as needed). The nodes are
// stopped when the test ends.
func LabCluster(t testing.TB, lab *netlab.Lab, root string, n int, args ...string) []*Proc {
	t.Helper()
	bin := Binary(t)
	ps := make([]*Proc, n)
	for i := range ps {
		h := lab.Host(i)
		a := append([]string{"--listen", h.TCPMultiaddr(0)}, args...)
		if i > 0 {
			a = append(a, "--join", ps[0].Addr)
		}
		p, err := StartCmd([]string{"ip", "netns", "exec", h.Netns}, bin, filepath.Join(root, fmt.Sprint(i)), a...)
		if err != nil {
			t.Fatalf("systest: %v", err)
		}
		t.Cleanup(func() { p.Stop(10 * time.Second) })
		ps[i] = p
	}
	return ps
}
