package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/multiformats/go-multiaddr"
	madns "github.com/multiformats/go-multiaddr-dns"
)

// blackhole makes ip:port an address whose connects hang: a listening
// socket with a backlog of 0 whose one queue slot is taken; Linux drops
// further SYNs. Skips the test where that cannot be set up.
func blackhole(t *testing.T, ip string, port int) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Skipf("cannot blackhole %s:%d: socket: %v", ip, port, err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	sa := &syscall.SockaddrInet4{Port: port}
	copy(sa.Addr[:], net.ParseIP(ip).To4())
	if err := syscall.Bind(fd, sa); err != nil {
		t.Skipf("cannot blackhole %s:%d: bind: %v", ip, port, err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Skipf("cannot blackhole %s:%d: listen: %v", ip, port, err)
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Skipf("cannot blackhole %s: filling the queue: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	probe, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	var ne net.Error
	switch {
	case err == nil:
		_ = probe.Close()
		t.Skipf("cannot blackhole %s: a full accept queue still takes connections here", addr)
	case !errors.As(err, &ne) || !ne.Timeout():
		t.Skipf("cannot blackhole %s: a connect to a full queue fails instead of hanging: %v", addr, err)
	}
}

// TestLearnPeerIDBlackholedAddress (issue 26 defect 10): a join name
// resolves to a blackholed address first and to a member second. The
// member's peer ID is learned well within the dial budget: the dead
// address does not use it all up.
func TestLearnPeerIDBlackholedAddress(t *testing.T) {
	b := startNode(t, localConfig(t.TempDir()), nil)
	a := startNode(t, localConfig(t.TempDir()), nil)
	ps, err := b.Host().Addrs()[0].ValueForProtocol(multiaddr.P_TCP)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(ps)
	blackhole(t, "127.0.0.2", port)

	const name = "members.ringmesh.test"
	res, err := madns.NewResolver(madns.WithDefaultResolver(&madns.MockResolver{IP: map[string][]net.IPAddr{
		name: {{IP: net.IPv4(127, 0, 0, 2)}, {IP: net.IPv4(127, 0, 0, 1)}},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	old := madns.DefaultResolver
	madns.DefaultResolver = res
	t.Cleanup(func() { madns.DefaultResolver = old })

	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	join := multiaddr.StringCast(fmt.Sprintf("/dns4/%s/tcp/%d", name, port))
	start := time.Now()
	id, err := a.learnPeerID(ctx, join)
	el := time.Since(start)
	if err != nil {
		t.Fatalf("learnPeerID(%s) after %v: %v", join, el, err)
	}
	if id != b.Self() {
		t.Fatalf("learnPeerID(%s) = %s, want %s", join, id, b.Self())
	}
	if el > dialTimeout/2 {
		t.Errorf("learnPeerID took %v of its %v budget behind one blackholed address", el, dialTimeout)
	}
}
