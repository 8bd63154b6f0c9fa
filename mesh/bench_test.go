package mesh

import (
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// measureCrashDetection starts n nodes joined through the first, crashes one
// (Close without leave, as a killed process's sockets close) and returns the
// time until every survivor's view shows it dead.
func measureCrashDetection(tb testing.TB, n int) time.Duration {
	tb.Helper()
	boot := startNode(tb, localConfig(tb.TempDir()), nil)
	nodes := []*testNode{boot}
	for range n - 1 {
		cfg := localConfig(tb.TempDir())
		cfg.Join = []string{boot.joinAddr()}
		nodes = append(nodes, startNode(tb, cfg, nil))
	}
	for _, x := range nodes {
		waitFor(tb, "all alive", func() (bool, string) { return seesAlive(x, nodes...) })
	}
	victim, survivors := nodes[0], nodes[1:]
	start := time.Now()
	if err := victim.Close(); err != nil { // Run goes on until crash below
		tb.Fatalf("Close: %v", err)
	}
	for _, x := range survivors {
		for {
			if st, _ := stateOf(x, victim.Self()); st == Dead {
				break
			}
			if time.Since(start) > testTimeout {
				tb.Fatalf("%s never saw the crash", short(x.Self()))
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	d := time.Since(start)
	victim.crash(tb)
	for _, x := range survivors {
		x.stop(tb)
	}
	return d
}

// BenchmarkCrashDetection reports the median time from a crash to every
// survivor (of 4 nodes) seeing it dead, with LocalConfig.
func BenchmarkCrashDetection(b *testing.B) {
	var ds []time.Duration
	for b.Loop() {
		ds = append(ds, measureCrashDetection(b, 4))
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Milliseconds()), "ms-to-dead")
	b.ReportMetric(0, "ns/op")
}

func TestCrashDetectionTime(t *testing.T) {
	t.Logf("crash to dead on all 3 survivors: %v", measureCrashDetection(t, 4))
}

// TestSilentFailureDetection: a member that stops heartbeating and answers
// pings never (a hung process: its connections stay open) becomes suspect
// after SuspectTimeout on every member, fails its probes, direct and
// indirect, and is declared dead by all once the votes agree.
func TestSilentFailureDetection(t *testing.T) {
	a := startNode(t, localConfig(t.TempDir()), nil)
	cfg := localConfig(t.TempDir())
	cfg.Join = []string{a.joinAddr()}
	b := startNode(t, cfg, nil)
	x := newHostile(t, a)
	hung := make(chan struct{})
	t.Cleanup(func() { close(hung) })
	x.host.SetStreamHandler(ping.ID, func(s network.Stream) {
		<-hung
		s.Reset()
	})
	hbB, err := encodeHeartbeat(nil, &heartbeat{Mesh: a.cfg.Mesh, Sender: x.id, Incarnation: 1, State: Alive, Addrs: x.host.Addrs()})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "hung node alive and connected", func() (bool, string) {
		x.publish(t, topicHeartbeat, hbB)
		sa, _ := stateOf(a, x.id)
		sb, _ := stateOf(b, x.id)
		conn := x.host.Network().Connectedness(b.Self()) == network.Connected
		return sa == Alive && sb == Alive && conn, sa.String() + " " + sb.String()
	})
	last := time.Now()
	for _, n := range []*testNode{a, b} {
		waitFor(t, "hung node dead", func() (bool, string) {
			st, _ := stateOf(n, x.id)
			return st == Dead, st.String()
		})
	}
	t.Logf("last heartbeat to dead on both: %v (suspect %v + shortest suspicion %v)",
		time.Since(last), a.cfg.SuspectTimeout, minSuspicion(a.cfg))
	for _, n := range []*testNode{a, b} {
		if x.host.Network().Connectedness(n.Self()) != network.Connected {
			t.Errorf("hung node not connected to %s; the test means to probe over an open connection", short(n.Self()))
		}
	}
}
