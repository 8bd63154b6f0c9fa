package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/sec"
	"github.com/libp2p/go-libp2p/p2p/net/pnet"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/multiformats/go-multiaddr"
	madns "github.com/multiformats/go-multiaddr-dns"
	manet "github.com/multiformats/go-multiaddr/net"
	mss "github.com/multiformats/go-multistream"
)

// plainTCP reports whether a is HOST/tcp/PORT and nothing else, with HOST
// an IP or a DNS name: the join addresses that may come without a peer ID.
func plainTCP(a multiaddr.Multiaddr) bool {
	ps := a.Protocols()
	if len(ps) != 2 || ps[1].Code != multiaddr.P_TCP {
		return false
	}
	switch ps[0].Code {
	case multiaddr.P_IP4, multiaddr.P_IP6, multiaddr.P_DNS, multiaddr.P_DNS4, multiaddr.P_DNS6:
		return true
	}
	return false
}

// learnPeerID finds the peer ID behind a plain TCP join address (another
// member's if the address also reaches this node), so that
// `--join /dns4/gpu1/tcp/4001` works without copying a peer ID. It runs the
// first half of a libp2p dial by hand: TCP, the private-network handshake
// (when the mesh has a secret: a host without it cannot get further), the
// multistream choice of Noise, and a Noise handshake as initiator that
// accepts any remote key. Noise proves the remote holds the key of the ID it
// reports; the secret proves it is a member (on an open mesh nothing does:
// the address is trusted on first use, like a member multiaddr someone
// typed). Then the connection is closed and the caller dials the ID the
// normal way, through the gaters.
func (m *Mesh) learnPeerID(ctx context.Context, a multiaddr.Multiaddr) (peer.ID, error) {
	addrs, err := madns.DefaultResolver.Resolve(ctx, a)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", a, err)
	}
	// A name may resolve to many members (a Kubernetes headless Service)
	// and to this node: the first other member that answers wins. The
	// addresses are tried happy-eyeballs style (RFC 8305), each
	// joinStagger after the previous one or as soon as it fails, all
	// under ctx: an address that never answers (a dead pod's, a
	// blackholed one) holds up the others by joinStagger, not by the
	// whole dial budget.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the attempts still running
	type answer struct {
		id  peer.ID
		err error
	}
	answers := make(chan answer, len(addrs))
	next := time.NewTimer(0)
	defer next.Stop()
	var errs []error
	self := false
	for started, running := 0, 0; started < len(addrs) || running > 0; {
		var start <-chan time.Time
		if started < len(addrs) {
			start = next.C
		}
		select {
		case <-start:
			ra := addrs[started]
			started++
			running++
			go func() {
				id, err := m.handshakeID(ctx, ra)
				answers <- answer{id, err}
			}()
			next.Reset(joinStagger)
		case r := <-answers:
			running--
			switch {
			case r.err != nil:
				errs = append(errs, r.err)
			case r.id == m.self:
				self = true
			default:
				return r.id, nil
			}
			next.Reset(0) // the next address now
		}
	}
	switch {
	case len(errs) > 0:
		return "", errors.Join(errs...)
	case self:
		return m.self, nil
	}
	return "", fmt.Errorf("resolve %s: no addresses", a)
}

// joinStagger is how long learnPeerID waits for one resolved address to
// answer before it tries the next one as well (RFC 8305's connection
// attempt delay).
const joinStagger = 250 * time.Millisecond

func (m *Mesh) handshakeID(ctx context.Context, a multiaddr.Multiaddr) (peer.ID, error) {
	var d manet.Dialer
	c, err := d.DialContext(ctx, a)
	if err != nil {
		return "", err
	}
	defer c.Close()
	// Another address answered first (or the budget ran out): stop now.
	defer context.AfterFunc(ctx, func() { _ = c.Close() })()
	deadline := time.Now().Add(dialTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	if err := c.SetDeadline(deadline); err != nil {
		return "", err
	}
	var conn net.Conn = c
	if m.psk != nil {
		if conn, err = pnet.NewProtectedConn(m.psk, c); err != nil {
			return "", fmt.Errorf("%s: private network: %w", a, err)
		}
	}
	if err := mss.SelectProtoOrFail(noise.ID, conn); err != nil {
		return "", fmt.Errorf("%s: no libp2p Noise handshake there (%w): %w", a, errForeign, err)
	}
	tpt, err := noise.New(noise.ID, m.key, nil)
	if err != nil {
		return "", err
	}
	st, err := tpt.WithSessionOptions(noise.DisablePeerIDCheck())
	if err != nil {
		return "", err
	}
	sc, err := st.SecureOutbound(ctx, conn, "")
	if err != nil {
		return "", fmt.Errorf("%s: handshake (%w): %w", a, errForeign, err)
	}
	defer sc.Close()
	return sc.RemotePeer(), nil
}

// errForeign marks a join address that answers but fails the handshake.
var errForeign = errors.New("a different mesh secret, or not a ringmesh node")

// foreignMesh reports whether a join dial reached the address but failed
// the connection's handshake: the remote has another mesh secret (the
// private-network layer turns the security negotiation into noise), is an
// open mesh while this node is private (or the reverse), or is no libp2p
// node at all. A refused or timed-out dial is not foreign.
func foreignMesh(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, errForeign) {
		return true
	}
	// A member of this mesh under another peer ID (its data dir was
	// replaced) passed the handshake: not another mesh.
	var mismatch sec.ErrPeerIDMismatch
	if errors.As(err, &mismatch) || strings.Contains(err.Error(), "peer id mismatch") {
		return false
	}
	// libp2p's upgrader wraps every failure of the security negotiation
	// in this text (and no type).
	return strings.Contains(err.Error(), "failed to negotiate security protocol")
}

// foreignMessage is the warning about join address addr answering as
// another mesh.
func (m *Mesh) foreignMessage(addr string) string {
	if m.psk == nil {
		return addr + " refuses this node: it belongs to a private mesh (or is not a ringmesh node), and this node runs an open mesh without a secret: join it with its token"
	}
	return addr + " belongs to a mesh with another secret (or is not a ringmesh node): check the join token (this node uses the secret in " + m.cfg.PSKFile + ")"
}
