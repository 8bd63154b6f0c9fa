package netlab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Config describes a lab. Build one with DefaultConfig and change fields.
type Config struct {
	// Prefix starts every namespace name of the lab, and New removes
	// leftovers of dead processes that carry it. 1-12 lowercase letters or
	// digits. Default "rmlab".
	Prefix string
	// Subnet is the IPv4 /24 the hosts live in; host i gets address i+1.
	// Every lab has its own bridge, so labs with the same subnet do not
	// clash. Default 10.213.0.0/24.
	Subnet netip.Prefix
	// CleanupTimeout bounds how long cleanup waits for killed processes to
	// leave the namespaces. Default 10 s.
	CleanupTimeout time.Duration
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Prefix:         "rmlab",
		Subnet:         netip.MustParsePrefix("10.213.0.0/24"),
		CleanupTimeout: 10 * time.Second,
	}
}

// LocalConfig is DefaultConfig; labs are local by nature. It exists so the
// package offers the same presets as the others.
func LocalConfig() Config { return DefaultConfig() }

var prefixRE = regexp.MustCompile(`^[a-z0-9]{1,12}$`)

// MaxHosts is the largest n New accepts.
const MaxHosts = 250

// Validate checks the fields.
func (c Config) Validate() error {
	if !prefixRE.MatchString(c.Prefix) {
		return fmt.Errorf("netlab: prefix %q must be 1-12 lowercase letters or digits", c.Prefix)
	}
	if !c.Subnet.Addr().Is4() || c.Subnet.Bits() != 24 || c.Subnet.Masked() != c.Subnet {
		return fmt.Errorf("netlab: subnet %s must be an IPv4 /24 network address", c.Subnet)
	}
	if c.CleanupTimeout <= 0 {
		return fmt.Errorf("netlab: cleanup timeout %v must be positive", c.CleanupTimeout)
	}
	return nil
}

// Host is one namespace of a lab.
type Host struct {
	// Index is the host's position, 0..n-1.
	Index int
	// Netns is the namespace name (for ip netns exec).
	Netns string
	// Iface is the host's interface on the bridge ("eth0").
	Iface string
	// IP is the host's address on the bridge.
	IP netip.Addr
}

// TCPMultiaddr returns "/ip4/<IP>/tcp/<port>".
func (h Host) TCPMultiaddr(port int) string {
	return fmt.Sprintf("/ip4/%s/tcp/%d", h.IP, port)
}

// Lab is a bridge and n host namespaces. Its methods call t.Fatal on error,
// so call them from the test's goroutine.
type Lab struct {
	t      testing.TB
	cfg    Config
	base   string // "<prefix>-<pid>-<rand>"
	bridge string // bridge namespace
	hosts  []Host

	mu   sync.Mutex
	cuts map[[2]int]bool // i<j pairs that cannot talk
	cmds []*exec.Cmd
}

// New builds a lab of n hosts (1..MaxHosts) and registers its removal with
// t.Cleanup. It skips t like Require when a lab cannot be built here.
func New(t testing.TB, n int, cfg Config) *Lab {
	t.Helper()
	Require(t)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if n < 1 || n > MaxHosts {
		t.Fatalf("netlab: %d hosts, want 1..%d", n, MaxHosts)
	}
	removeLeftovers(t, cfg.Prefix)
	base := fmt.Sprintf("%s-%d-%s", cfg.Prefix, os.Getpid(), randSuffix())
	l := &Lab{t: t, cfg: cfg, base: base, bridge: base + "-br", cuts: map[[2]int]bool{}}
	t.Cleanup(l.cleanup)
	if err := l.setupBridge(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		h, err := l.setupHost(i)
		if err != nil {
			t.Fatal(err)
		}
		l.hosts = append(l.hosts, h)
	}
	return l
}

// N returns the number of hosts.
func (l *Lab) N() int { return len(l.hosts) }

// Host returns host i.
func (l *Lab) Host(i int) Host {
	l.t.Helper()
	l.checkIndex(i)
	return l.hosts[i]
}

// Hosts returns every host.
func (l *Lab) Hosts() []Host { return append([]Host(nil), l.hosts...) }

func (l *Lab) checkIndex(i int) {
	l.t.Helper()
	if i < 0 || i >= len(l.hosts) {
		l.t.Fatalf("netlab: host %d out of range 0..%d", i, len(l.hosts)-1)
	}
}

func (l *Lab) setupBridge() error {
	br := l.bridge
	steps := [][]string{
		{"netns", "add", br},
		{"-n", br, "link", "set", "lo", "up"},
		{"-n", br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"},
		{"-n", br, "link", "set", "br0", "up"},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) setupHost(i int) (Host, error) {
	a := l.cfg.Subnet.Addr().As4()
	a[3] = byte(i + 1)
	h := Host{Index: i, Netns: fmt.Sprintf("%s-h%d", l.base, i), Iface: "eth0", IP: netip.AddrFrom4(a)}
	port := fmt.Sprintf("p%d", i)
	steps := [][]string{
		{"netns", "add", h.Netns},
		{"-n", h.Netns, "link", "set", "lo", "up"},
		{"-n", h.Netns, "link", "add", h.Iface, "type", "veth", "peer", "name", port, "netns", l.bridge},
		{"-n", l.bridge, "link", "set", port, "master", "br0"},
		{"-n", l.bridge, "link", "set", port, "up"},
		{"-n", h.Netns, "addr", "add", netip.PrefixFrom(h.IP, 24).String(), "dev", h.Iface},
		{"-n", h.Netns, "link", "set", h.Iface, "up"},
		// A default route on the bridge so multicast (mDNS) has a route
		// and address lookups find an outgoing interface.
		{"-n", h.Netns, "route", "add", "default", "dev", h.Iface},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return h, fmt.Errorf("host %d: %w", i, err)
		}
	}
	if err := nftLoad(h.Netns, nftTable); err != nil {
		return h, fmt.Errorf("host %d: %w", i, err)
	}
	return h, nil
}

// cleanup kills what runs in the lab and deletes its namespaces.
func (l *Lab) cleanup() {
	l.mu.Lock()
	cmds := l.cmds
	l.cmds = nil
	l.mu.Unlock()
	for _, c := range cmds {
		if c.Process != nil {
			_ = c.Process.Kill()
		}
	}
	names := []string{l.bridge}
	for _, h := range l.hosts {
		names = append(names, h.Netns)
	}
	if err := deleteNetns(names, l.cfg.CleanupTimeout); err != nil {
		l.t.Errorf("netlab: cleanup: %v", err)
	}
}

// deleteNetns kills every process in the named namespaces, waits up to
// timeout for them to go, and deletes the namespaces. Missing ones are fine.
func deleteNetns(names []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var errs []error
	for _, name := range names {
		if !netnsExists(name) {
			continue
		}
		for {
			pids := netnsPids(name)
			if len(pids) == 0 {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("namespace %s: processes %v did not exit", name, pids))
				break
			}
			for _, p := range pids {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := ipCmd("netns", "del", name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func netnsExists(name string) bool {
	_, err := os.Stat("/var/run/netns/" + name)
	return err == nil
}

// netnsPids lists the processes in a namespace, never this one.
func netnsPids(name string) []int {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil && p != os.Getpid() {
			pids = append(pids, p)
		}
	}
	return pids
}

// removeLeftovers deletes namespaces "<prefix>-<pid>-..." whose creating
// process is gone (a test binary that crashed or was killed).
func removeLeftovers(t testing.TB, prefix string) {
	t.Helper()
	entries, err := os.ReadDir("/var/run/netns")
	if err != nil {
		return
	}
	var stale []string
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix+"-")
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		stale = append(stale, e.Name())
	}
	if len(stale) == 0 {
		return
	}
	t.Logf("netlab: removing %d leftover namespaces of dead processes", len(stale))
	if err := deleteNetns(stale, 10*time.Second); err != nil {
		t.Logf("netlab: leftovers: %v", err)
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
