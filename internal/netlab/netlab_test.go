package netlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv("NETLAB_TEST_ECHO"); addr != "" {
		os.Exit(echoServer(addr))
	}
	goleak.VerifyTestMain(m)
}

// echoServer is the test binary re-run inside a host by TestCommandProcess:
// it echoes one line per connection until killed.
func echoServer(addr string) int {
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("listening")
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// TestCommandProcess runs a process inside a host, as system tests run
// ringmesh nodes: the test binary itself, as an echo server on the host's
// address, reached from another host, cut off, and killed by cleanup.
func TestCommandProcess(t *testing.T) {
	lab := New(t, 2, DefaultConfig())
	addr := lab.Host(1).IP.String() + ":7000"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := lab.Command(ctx, 1, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "NETLAB_TEST_ECHO="+addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	line := make([]byte, len("listening\n"))
	if _, err := io.ReadFull(out, line); err != nil {
		t.Fatalf("echo server did not start: %v", err)
	}
	echo := func(timeout time.Duration) error {
		return lab.Run(0, func() error {
			c, err := net.DialTimeout("tcp4", addr, timeout)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(timeout))
			if _, err := c.Write([]byte("hi")); err != nil {
				return err
			}
			buf := make([]byte, 2)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" {
				return fmt.Errorf("echo %q: %v", buf, err)
			}
			return nil
		})
	}
	eventually(t, "echo from host 1", func() error { return echo(5 * time.Second) })
	lab.Cut(0, 1)
	if err := echo(time.Second); err == nil {
		t.Error("echo across a cut succeeded")
	}
	lab.Heal(0, 1)
	eventually(t, "echo after heal", func() error { return echo(5 * time.Second) })
	// The lab sees the echo server as a process of host 1 (what cleanup kills).
	if pids := netnsPids(lab.Host(1).Netns); len(pids) == 0 {
		t.Error("ip netns pids lists nothing in host 1, want the echo server")
	}
}

func TestCheckEnv(t *testing.T) {
	found := func(string) (string, error) { return "/usr/sbin/x", nil }
	noTC := func(name string) (string, error) {
		if name == "tc" || name == "nft" {
			return "", exec.ErrNotFound
		}
		return "/usr/sbin/" + name, nil
	}
	okProbe := func() error { return nil }
	badProbe := func() error { return errors.New("operation not permitted") }
	tests := []struct {
		name string
		e    env
		want string // substring of the error; "" for nil
	}{
		{"ok", env{0, found, okProbe}, ""},
		{"not root", env{1000, found, okProbe}, "not root"},
		{"tools missing", env{0, noTC, okProbe}, "tc, nft not found"},
		{"no netns", env{0, found, badProbe}, "cannot create a network namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkEnv(tt.e)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("checkEnv = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrUnavailable) {
				t.Fatalf("checkEnv = %v, want ErrUnavailable containing %q", err, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	bad := map[string]func(*Config){
		"empty prefix": func(c *Config) { c.Prefix = "" },
		"dash prefix":  func(c *Config) { c.Prefix = "a-b" },
		"ipv6 subnet":  func(c *Config) { c.Subnet = netip.MustParsePrefix("fd00::/64") },
		"/16 subnet":   func(c *Config) { c.Subnet = netip.MustParsePrefix("10.1.0.0/16") },
		"host bits":    func(c *Config) { c.Subnet = netip.MustParsePrefix("10.1.2.3/24") },
		"no timeout":   func(c *Config) { c.CleanupTimeout = 0 },
	}
	for name, mut := range bad {
		c := DefaultConfig()
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want error", name)
		}
	}
}

// listen starts a TCP server in host i that accepts connections and, on
// each, counts the bytes read to EOF and sends the time of EOF on done.
func listen(t *testing.T, lab *Lab, i int, done chan<- time.Time) net.Listener {
	t.Helper()
	var ln net.Listener
	err := lab.Run(i, func() (err error) {
		ln, err = net.Listen("tcp4", lab.Host(i).IP.String()+":0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(io.Discard, c)
				if done != nil {
					done <- time.Now()
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dial connects from host i to addr and closes the connection.
func dial(lab *Lab, i int, addr string, timeout time.Duration) error {
	return lab.Run(i, func() error {
		c, err := net.DialTimeout("tcp4", addr, timeout)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// eventually polls cond until it returns nil or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 30s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHostsTalk(t *testing.T) {
	lab := New(t, 3, DefaultConfig())
	var lns []net.Listener
	for i := 0; i < lab.N(); i++ {
		lns = append(lns, listen(t, lab, i, nil))
	}
	for i := 0; i < lab.N(); i++ {
		for j := 0; j < lab.N(); j++ {
			if i == j {
				continue
			}
			addr := lns[j].Addr().String()
			eventually(t, fmt.Sprintf("dial %d->%d", i, j), func() error { return dial(lab, i, addr, 5*time.Second) })
		}
	}
	// The root namespace does not reach the lab.
	if err := dial(lab, 0, "127.0.0.1:1", time.Second); err == nil {
		t.Error("dial 127.0.0.1:1 inside host 0 succeeded, want refused")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := lab.Command(ctx, 1, "ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr in host 1: %v: %s", err, out)
	}
	if want := lab.Host(1).IP.String() + "/24"; !strings.Contains(string(out), want) {
		t.Errorf("host 1 addresses = %q, want %s", out, want)
	}
	if got, want := lab.Host(2).TCPMultiaddr(4001), "/ip4/10.213.0.3/tcp/4001"; got != want {
		t.Errorf("TCPMultiaddr = %s, want %s", got, want)
	}
}

func TestCutAndHeal(t *testing.T) {
	lab := New(t, 3, DefaultConfig())
	addr := make([]string, lab.N())
	for i := range addr {
		addr[i] = listen(t, lab, i, nil).Addr().String()
	}
	connected := func(i, j int) error { return dial(lab, i, addr[j], 5*time.Second) }
	blocked := func(i, j int) {
		t.Helper()
		if err := dial(lab, i, addr[j], time.Second); err == nil {
			t.Errorf("dial %d->%d succeeded across a cut", i, j)
		}
	}
	talk := func(i, j int) {
		t.Helper()
		eventually(t, fmt.Sprintf("dial %d->%d", i, j), func() error { return connected(i, j) })
	}

	lab.Cut(0, 1)
	blocked(0, 1)
	blocked(1, 0)
	talk(0, 2)
	talk(2, 1)
	if got := lab.Cuts(); len(got) != 1 || got[0] != [2]int{0, 1} {
		t.Errorf("Cuts() = %v, want [[0 1]]", got)
	}
	lab.Heal(1, 0)
	talk(0, 1)
	talk(1, 0)

	lab.Partition([]int{0}, []int{1, 2})
	blocked(0, 1)
	blocked(2, 0)
	talk(1, 2)
	lab.HealAll()
	talk(0, 1)
	talk(2, 0)
	if got := lab.Cuts(); len(got) != 0 {
		t.Errorf("Cuts() after HealAll = %v, want none", got)
	}
}

// TestMulticast checks that multicast crosses the bridge (mDNS needs it) and
// that a cut stops it too.
func TestMulticast(t *testing.T) {
	lab := New(t, 3, DefaultConfig())
	group := &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353} // mDNS
	recv := make([]chan string, lab.N())
	for i := 1; i < lab.N(); i++ {
		var c *net.UDPConn
		err := lab.Run(i, func() error {
			ifi, err := net.InterfaceByName(lab.Host(i).Iface)
			if err != nil {
				return err
			}
			c, err = net.ListenMulticastUDP("udp4", ifi, group)
			return err
		})
		if err != nil {
			t.Fatalf("listen in host %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		ch := make(chan string, 1024)
		recv[i] = ch
		go func() {
			defer close(ch)
			buf := make([]byte, 1500)
			for {
				n, _, err := c.ReadFromUDP(buf)
				if err != nil {
					return
				}
				ch <- string(buf[:n])
			}
		}()
	}
	var snd *net.UDPConn
	if err := lab.Run(0, func() (err error) { snd, err = net.DialUDP("udp4", nil, group); return err }); err != nil {
		t.Fatal(err)
	}
	defer snd.Close()

	// waitFor sends tag packets until host i has one, draining others.
	waitFor := func(i int, tag string) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case m := <-recv[i]:
				if m == tag {
					return
				}
			case <-tick.C:
				if _, err := snd.Write([]byte(tag)); err != nil {
					t.Fatal(err)
				}
			case <-deadline:
				t.Fatalf("host %d got no multicast %q in 30s", i, tag)
			}
		}
	}
	waitFor(1, "open")
	waitFor(2, "open")

	lab.Cut(0, 1)
	waitFor(2, "cut")
	for k := 0; k < 20; k++ {
		waitFor(2, fmt.Sprintf("cut-%d", k))
	}
	for len(recv[1]) > 0 {
		if m := <-recv[1]; strings.HasPrefix(m, "cut") {
			t.Fatalf("host 1 got multicast %q across a cut", m)
		}
	}
	lab.HealAll()
	waitFor(1, "healed")
}

func TestSetRate(t *testing.T) {
	lab := New(t, 3, DefaultConfig())
	const rate = 20_000_000 // bit/s
	const size = 1 << 20
	done := make(chan time.Time, 1)
	addr := listen(t, lab, 1, done).Addr().String()

	transfer := func() time.Duration {
		t.Helper()
		start := time.Now()
		err := lab.Run(0, func() error {
			c, err := net.DialTimeout("tcp4", addr, 10*time.Second)
			if err != nil {
				return err
			}
			c.SetDeadline(time.Now().Add(60 * time.Second))
			if _, err := c.Write(make([]byte, size)); err != nil {
				c.Close()
				return err
			}
			return c.Close()
		})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case end := <-done:
			return end.Sub(start)
		case <-time.After(60 * time.Second):
			t.Fatal("receiver did not finish in 60s")
			return 0
		}
	}
	mbps := func(d time.Duration) float64 { return size * 8 / d.Seconds() / 1e6 }
	// A token bucket cannot pass more than burst + rate*t bytes in t, so
	// this bound holds however loaded the machine is.
	minT := time.Duration(float64(size-tbfBurst(rate)) * 8 / rate * float64(time.Second))

	free := transfer()
	lab.SetRate(0, rate)
	shaped := transfer()
	lab.SetRate(0, 0)
	lab.SetIngressRate(1, rate)
	shapedIn := transfer()
	t.Logf("1 MiB host 0 -> 1: unshaped %v (%.0f Mbit/s); %.0f Mbit/s tbf on 0's egress %v (%.1f Mbit/s), on 1's ingress %v (%.1f Mbit/s)",
		free, mbps(free), rate/1e6, shaped, mbps(shaped), shapedIn, mbps(shapedIn))
	if shaped < minT {
		t.Errorf("egress-shaped transfer took %v, a %d bit/s bucket needs at least %v", shaped, rate, minT)
	}
	if shapedIn < minT {
		t.Errorf("ingress-shaped transfer took %v, a %d bit/s bucket needs at least %v", shapedIn, rate, minT)
	}
	if q := qdiscs(t, lab.bridge, "p1"); !strings.Contains(q, "tbf") {
		t.Errorf("bridge port qdisc after SetIngressRate = %q, want tbf", q)
	}
	h := lab.Host(0)
	if q := qdiscs(t, h.Netns, h.Iface); strings.Contains(q, "tbf") {
		t.Errorf("qdisc after SetRate(0) = %q, want no tbf", q)
	}
	lab.SetRate(0, rate)
	if q := qdiscs(t, h.Netns, h.Iface); !strings.Contains(q, "tbf") {
		t.Errorf("qdisc after SetRate = %q, want tbf", q)
	}
}

func qdiscs(t *testing.T, netns, dev string) string {
	t.Helper()
	out, err := exec.Command("tc", "-n", netns, "qdisc", "show", "dev", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("tc qdisc show: %v: %s", err, out)
	}
	return string(out)
}

func TestSetDelay(t *testing.T) {
	lab := New(t, 1, DefaultConfig())
	err := lab.SetDelay(0, 20*time.Millisecond)
	switch {
	case errors.Is(err, ErrUnsupported):
		t.Logf("netem unavailable here: %v", err)
		if q := qdiscs(t, lab.Host(0).Netns, "eth0"); strings.Contains(q, "netem") {
			t.Errorf("qdisc = %q after a failed SetDelay", q)
		}
	case err != nil:
		t.Fatalf("SetDelay = %v, want nil or ErrUnsupported", err)
	default:
		if q := qdiscs(t, lab.Host(0).Netns, "eth0"); !strings.Contains(q, "netem") {
			t.Errorf("qdisc after SetDelay = %q, want netem", q)
		}
	}
}

// TestCleanup checks that a finished test leaves no namespace and no process.
func TestCleanup(t *testing.T) {
	// The subtest's New would skip only the subtest, and cmd would stay nil.
	Require(t)
	var names []string
	var cmd *exec.Cmd
	t.Run("lab", func(t *testing.T) {
		lab := New(t, 2, DefaultConfig())
		names = append(names, lab.bridge)
		for _, h := range lab.Hosts() {
			names = append(names, h.Netns)
		}
		cmd = lab.Command(context.Background(), 1, "sleep", "600")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	})
	if cmd == nil {
		t.Fatal("the lab subtest did not start its process")
	}
	for _, n := range names {
		if netnsExists(n) {
			t.Errorf("namespace %s still exists after cleanup", n)
		}
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err == nil {
			t.Error("sleep 600 exited cleanly, want killed")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("process started in the lab still running 30s after cleanup")
	}
}

// TestLeftovers checks that New removes namespaces of a dead process.
func TestLeftovers(t *testing.T) {
	Require(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Prefix = "rmlableft"
	stale := fmt.Sprintf("%s-%d-beef-h0", cfg.Prefix, dead.Process.Pid)
	live := fmt.Sprintf("%s-%d-beef-h0", cfg.Prefix, os.Getpid())
	for _, n := range []string{stale, live} {
		if err := ipCmd("netns", "add", n); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = deleteNetns([]string{stale, live}, 10*time.Second) })
	New(t, 1, cfg)
	if netnsExists(stale) {
		t.Errorf("leftover %s of a dead process not removed", stale)
	}
	if !netnsExists(live) {
		t.Errorf("namespace %s of a live process removed", live)
	}
}
