package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/ringmesh/ringmesh/internal/nodeproc"
	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// localCluster is n `ringmesh node` processes on 127.0.0.1, each with its
// own data dir under a temp root, stopped by PID.
type localCluster struct {
	bin   string
	root  string
	args  []string // flags every node gets
	procs []*nodeproc.Proc
	keep  bool // keep the data dirs (and node logs) at stop
	out   io.Writer
}

// nodeArgs are the flags of a local bench node: loopback only, no mDNS or
// DHT, production failure detection unless fast, a private mesh (one
// secret for all) unless open.
func nodeArgs(n int, fast, open bool) []string {
	a := []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht", "--log-level", "info",
		"--min-members", fmt.Sprint(n)}
	if fast {
		a = append(a, "--fast-detect")
	}
	if open {
		a = append(a, "--insecure-open-mesh")
	}
	return a
}

// startLocal starts n nodes; every node after the first joins the first.
// profileDir, when set, gets one CPU profile per node (node-I.pprof). Set
// keep on the result to keep the data dirs and node logs after stop.
func startLocal(n int, args []string, profileDir string, stderr io.Writer) (*localCluster, error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own binary: %w", err)
	}
	root, err := os.MkdirTemp("", "ringmesh-bench-")
	if err != nil {
		return nil, err
	}
	if profileDir != "" {
		if err := os.MkdirAll(profileDir, 0o755); err != nil {
			return nil, fmt.Errorf("profile dir: %w", err)
		}
	}
	c := &localCluster{bin: bin, root: root, args: args, procs: make([]*nodeproc.Proc, n), out: stderr}
	for i := range n {
		a := append([]string{}, args...)
		if i > 0 {
			a = append(a, "--join", c.procs[0].Addr)
		}
		if profileDir != "" {
			a = append(a, "--cpuprofile", filepath.Join(profileDir, fmt.Sprintf("node-%d.pprof", i)))
		}
		p, err := nodeproc.StartCmd(nil, bin, c.dir(i), a...)
		if err != nil {
			c.stop()
			return nil, fmt.Errorf("start node %d: %w", i, err)
		}
		c.procs[i] = p
		fmt.Fprintf(stderr, "node %d: pid %d %s\n", i, p.Cmd.Process.Pid, p.ID)
	}
	return c, nil
}

func (c *localCluster) dir(i int) string { return filepath.Join(c.root, fmt.Sprint(i)) }

// restart starts node i again on its data dir (same identity), joining
// through node via.
func (c *localCluster) restart(i, via int) error {
	a := append(append([]string{}, c.args...), "--join", c.procs[via].Addr)
	p, err := nodeproc.StartCmd(nil, c.bin, c.dir(i), a...)
	if err != nil {
		return fmt.Errorf("restart node %d: %w", i, err)
	}
	c.procs[i] = p
	return nil
}

// stop stops every process (SIGTERM, then SIGKILL) and removes the data
// unless c.keep.
func (c *localCluster) stop() {
	for _, p := range c.procs {
		if p != nil {
			p.Stop(10 * time.Second)
		}
	}
	if c.keep {
		fmt.Fprintf(c.out, "node data dirs and logs kept in %s\n", c.root)
		return
	}
	os.RemoveAll(c.root)
}

// joinMesh joins, retrying the node's "timeout" answers until ctx ends;
// progress goes to stderr.
func joinMesh(ctx context.Context, c *client.Client, who string, stderr io.Writer) (localapi.Response, error) {
	return c.JoinWait(ctx, 0, func(err error) { fmt.Fprintf(stderr, "%s: waiting to join: %v\n", who, err) })
}

// median returns the median of ds (the mean of the middle two for an even
// count); 0 for none.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
