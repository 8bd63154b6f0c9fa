package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/netlab"
	"github.com/ringmesh/ringmesh/internal/systest"
	"github.com/ringmesh/ringmesh/mesh"
)

// memberState returns the state of id in the status of the node of dir.
func memberState(dir, id string) (mesh.State, uint64, error) {
	st, err := systest.Status(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, m := range st.Members {
		if m.ID == id {
			var s mesh.State
			if err := s.UnmarshalText([]byte(m.State)); err != nil {
				return 0, 0, err
			}
			return s, m.Incarnation, nil
		}
	}
	return 0, 0, fmt.Errorf("%s does not see %s", filepath.Base(dir), id)
}

func allSee(ps []*systest.Proc, id string, want mesh.State) error {
	for _, p := range ps {
		s, _, err := memberState(p.Dir, id)
		if err != nil {
			return err
		}
		if s != want {
			return fmt.Errorf("%s sees %s as %s, want %s", filepath.Base(p.Dir), id[len(id)-6:], s, want)
		}
	}
	return nil
}

// TestProcessesCrashAndRestart is the process scenario of the mesh issue:
// 4 nodes each given only --join to the first; SIGKILL the first; the others
// agree it is dead; restarted with the same data dir and --join to another,
// it is alive again with the same peer ID and a higher incarnation.
func TestProcessesCrashAndRestart(t *testing.T) {
	root := t.TempDir()
	dumpLogsOnFailure(t, root)
	ps := systest.Cluster(t, root, 4)
	for _, p := range ps {
		systest.Eventually(t, 60*time.Second, func() error { return allSee(ps, p.ID, mesh.Alive) })
	}
	first := ps[0]
	_, inc, err := memberState(ps[1].Dir, first.ID)
	if err != nil {
		t.Fatal(err)
	}
	first.Kill()
	killed := time.Now()
	systest.Eventually(t, 60*time.Second, func() error { return allSee(ps[1:], first.ID, mesh.Dead) })
	t.Logf("SIGKILL to every survivor showing dead: %s", time.Since(killed).Round(time.Millisecond))

	again := systest.Start(t, first.Dir, "--join", ps[2].Addr)
	if again.ID != first.ID {
		t.Fatalf("restarted node has peer ID %s, want %s (same data dir)", again.ID, first.ID)
	}
	systest.Eventually(t, 60*time.Second, func() error {
		if err := allSee(ps[1:], first.ID, mesh.Alive); err != nil {
			return err
		}
		for _, p := range ps[1:] {
			if _, got, _ := memberState(p.Dir, first.ID); got <= inc {
				return fmt.Errorf("%s sees incarnation %d, want > %d", filepath.Base(p.Dir), got, inc)
			}
		}
		return nil
	})
}

// TestStatusCLI checks `ringmesh status` against a live node and its error
// for a data dir without a node.
func TestStatusCLI(t *testing.T) {
	bin := systest.Binary(t)
	p := systest.Start(t, filepath.Join(t.TempDir(), "n"))
	out, err := exec.Command(bin, "status", "--data-dir", p.Dir, "--json").Output()
	if err != nil {
		t.Fatalf("status --json: %v", err)
	}
	for _, want := range []string{`"self":{"id":"` + p.ID, `"state":"alive"`, `"incarnation":`, `"gpus":[]`, `"cpus":`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("status --json = %s, missing %s", out, want)
		}
	}
	out, err = exec.Command(bin, "status", "--data-dir", p.Dir).Output()
	if err != nil || !strings.Contains(string(out), "STATE") || !strings.Contains(string(out), "alive") {
		t.Errorf("status table: %v\n%s", err, out)
	}
	empty := t.TempDir()
	cmd := exec.Command(bin, "status", "--data-dir", empty)
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("status without a node: err %v, want exit code 1", err)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], empty) {
		t.Errorf("status without a node printed %q, want one line naming %s", out, empty)
	}
}

// TestNodeGracefulLeave checks that SIGTERM makes a node exit 0 and the
// others see it as left, not dead.
func TestNodeGracefulLeave(t *testing.T) {
	root := t.TempDir()
	dumpLogsOnFailure(t, root)
	ps := systest.Cluster(t, root, 2)
	systest.Eventually(t, 60*time.Second, func() error { return allSee(ps, ps[1].ID, mesh.Alive) })
	if err := ps[1].Stop(20 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v (want exit 0)", err)
	}
	systest.Eventually(t, 30*time.Second, func() error { return allSee(ps[:1], ps[1].ID, mesh.Left) })
}

// TestLabMDNSDiscovery: three hosts in network namespaces find each other by
// mDNS alone (no --join).
func TestLabMDNSDiscovery(t *testing.T) {
	netlab.Require(t)
	lab := netlab.New(t, 3, netlab.DefaultConfig())
	bin := systest.Binary(t)
	root := t.TempDir()
	dumpLogsOnFailure(t, root)
	name := fmt.Sprintf("mdns-%d", time.Now().UnixNano()%100000)
	var ps []*systest.Proc
	for i := range 3 {
		h := lab.Host(i)
		p, err := systest.StartCmd([]string{"ip", "netns", "exec", h.Netns}, bin, filepath.Join(root, fmt.Sprint(i)),
			"--listen", h.TCPMultiaddr(0), "--mesh", name, "--no-dht", "--fast-detect")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Stop(10 * time.Second) })
		ps = append(ps, p)
	}
	systest.Eventually(t, 90*time.Second, func() error {
		for _, p := range ps {
			st, err := systest.Status(p.Dir)
			if err != nil {
				return err
			}
			var alive []string
			for _, m := range st.Members {
				if m.State == mesh.Alive.String() {
					alive = append(alive, m.ID)
				}
			}
			if len(alive) != 3 {
				return fmt.Errorf("%s sees %d alive members", filepath.Base(p.Dir), len(alive))
			}
		}
		return nil
	})
}

// BenchmarkKillToDead measures, with the default failure-detection settings
// (no --fast-detect), the time from SIGKILL of one of 4 node processes to
// every survivor showing it dead; 10 tries, median and max reported.
func BenchmarkKillToDead(b *testing.B) {
	bin := systest.Binary(b)
	root := b.TempDir()
	args := []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht"}
	ps := make([]*systest.Proc, 4)
	start := func(i int, join string) {
		a := args
		if join != "" {
			a = append(append([]string{}, args...), "--join", join)
		}
		p, err := systest.StartCmd(nil, bin, filepath.Join(root, fmt.Sprint(i)), a...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Stop(10 * time.Second) })
		ps[i] = p
	}
	start(0, "")
	for i := 1; i < 4; i++ {
		start(i, ps[0].Addr)
	}
	var times []time.Duration
	for try := range 10 {
		for _, p := range ps {
			systest.Eventually(b, time.Minute, func() error { return allSee(ps, p.ID, mesh.Alive) })
		}
		i := try % 4
		others := append(append([]*systest.Proc{}, ps[:i]...), ps[i+1:]...)
		ps[i].Kill()
		t0 := time.Now()
		systest.Eventually(b, time.Minute, func() error { return allSee(others, ps[i].ID, mesh.Dead) })
		times = append(times, time.Since(t0))
		p, err := systest.StartCmd(nil, bin, ps[i].Dir, append(append([]string{}, args...), "--join", others[0].Addr)...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Stop(10 * time.Second) })
		ps[i] = p
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	b.ReportMetric(times[len(times)/2].Seconds(), "median_s")
	b.ReportMetric(times[len(times)-1].Seconds(), "max_s")
	b.Logf("kill to every survivor showing dead (default settings), sorted: %v", times)
}
