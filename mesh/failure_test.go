package mesh

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// linkGater refuses connections to and from the peers it was told to cut.
type linkGater struct {
	mu  sync.Mutex
	cut map[peer.ID]bool
}

func (g *linkGater) block(p peer.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cut == nil {
		g.cut = make(map[peer.ID]bool)
	}
	g.cut[p] = true
}

func (g *linkGater) allowed(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.cut[p]
}

func (g *linkGater) InterceptPeerDial(p peer.ID) bool                        { return g.allowed(p) }
func (g *linkGater) InterceptAddrDial(p peer.ID, _ multiaddr.Multiaddr) bool { return g.allowed(p) }
func (g *linkGater) InterceptAccept(network.ConnMultiaddrs) bool             { return true }
func (g *linkGater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(p)
}
func (g *linkGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// noDeaths fails the test if any node's metrics saw a member declared dead.
func noDeaths(t *testing.T, nodes []*testNode, metrics []*countingMetrics) {
	t.Helper()
	for i, n := range nodes {
		if d := metrics[i].transitions(Dead); d != 0 {
			t.Errorf("%s declared %d members dead, want none", short(n.Self()), d)
		}
	}
}

// TestForgedDeadNotice: one member (a) keeps declaring a live member (b)
// dead, for twice DeadTimeout, at b's current incarnation each time. b
// refutes, and no member ever declares b dead: a failure notice is one vote,
// and the others still reach b.
func TestForgedDeadNotice(t *testing.T) {
	nodes, metrics := startMesh(t, 4, nil)
	a, b := nodes[0], nodes[1]
	inc0 := b.Incarnation()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	start := time.Now()
	until := start.Add(2 * a.cfg.DeadTimeout)
	sent := 0
	for time.Now().Before(until) {
		// Ten accusations per heartbeat interval, each at b's newest
		// incarnation.
		a.publishFailure(ctx, &failureNotice{Mesh: a.cfg.Mesh, Sender: a.Self(), Kind: Dead, Subject: b.Self(), Incarnation: b.Incarnation()})
		sent++
		time.Sleep(a.cfg.HeartbeatInterval / 10)
	}
	waitFor(t, "b refutes", func() (bool, string) { return b.Incarnation() > inc0, "" })
	final := b.Incarnation()
	// Refutations are paced: at most one per heartbeat interval (plus the
	// first, and one answering the last window), however many notices.
	if bumps, most := final-inc0, uint64(time.Since(start)/a.cfg.HeartbeatInterval)+2; bumps > most {
		t.Errorf("b refuted %d times for %d notices in %v; want at most %d (one per heartbeat interval)", bumps, sent, time.Since(start).Round(time.Millisecond), most)
	}
	for _, n := range nodes {
		waitFor(t, "b alive at its latest incarnation", func() (bool, string) {
			st, inc := stateOf(n, b.Self())
			return n == b || (st == Alive && inc >= final), fmt.Sprintf("%s sees b %v at %d, want alive at %d", short(n.Self()), st, inc, final)
		})
	}
	time.Sleep(a.cfg.DeadTimeout) // let any suspicion run out
	noDeaths(t, nodes, metrics)
	for _, n := range nodes {
		if ok, msg := seesAlive(n, nodes...); !ok {
			t.Error(msg)
		}
	}
}

// TestImplausibleIncarnation: a notice about b at incarnation 2^64-1, or more
// than maxIncarnationSkew above b's, is dropped and counted by every member
// (b included); b stays alive at its incarnation. A plausible notice ahead of
// b's incarnation is refuted at notice+1, without wrapping.
func TestImplausibleIncarnation(t *testing.T) {
	nodes, metrics := startMesh(t, 3, nil)
	b := nodes[1]
	x := newHostile(t, nodes[0], nodes[1:]...)
	inc0 := b.Incarnation()
	notice := func(kind State, inc uint64) []byte {
		bs, err := encodeFailure(nil, &failureNotice{Mesh: b.cfg.Mesh, Sender: x.id, Kind: kind, Subject: b.Self(), Incarnation: inc})
		if err != nil {
			t.Fatal(err)
		}
		return bs
	}
	dropped := func(want int) {
		for i, n := range nodes {
			waitFor(t, "implausible notice dropped", func() (bool, string) {
				st, inc := stateOf(n, b.Self())
				return metrics[i].count(reasonImplausibleIncarnation) >= want,
					fmt.Sprintf("%s counted %d, want %d; it sees b %v at %d; b is at %d (was %d)",
						short(n.Self()), metrics[i].count(reasonImplausibleIncarnation), want, st, inc, b.Incarnation(), inc0)
			})
		}
	}
	x.publish(t, topicFailure, notice(Dead, math.MaxUint64))
	dropped(1)
	x.publish(t, topicFailure, notice(Suspect, inc0+maxIncarnationSkew+1))
	dropped(2)
	if b.Incarnation() != inc0 {
		t.Errorf("b's incarnation %d after implausible notices, want %d", b.Incarnation(), inc0)
	}
	for _, n := range nodes {
		if st, inc := stateOf(n, b.Self()); st != Alive || inc != inc0 {
			t.Errorf("%s sees b %v at %d, want alive at %d", short(n.Self()), st, inc, inc0)
		}
	}

	x.publish(t, topicFailure, notice(Dead, inc0+5))
	waitFor(t, "b refutes past the notice", func() (bool, string) {
		return b.Incarnation() == inc0+6, fmt.Sprintf("b at %d, want %d", b.Incarnation(), inc0+6)
	})
	for _, n := range nodes {
		waitFor(t, "b alive, refuted", func() (bool, string) {
			st, inc := stateOf(n, b.Self())
			return st == Alive && inc == inc0+6, fmt.Sprintf("%s sees b %v at %d", short(n.Self()), st, inc)
		})
	}
	noDeaths(t, nodes, metrics)
}

// TestCutLink: with the link between b and c of a 4-member mesh cut (both
// refuse the other's connections), each probes the other, fails, asks the
// others, who reach it: nobody declares either dead, and they keep seeing
// each other alive through gossip. A member whose host closes (d) is still
// declared dead by all.
func TestCutLink(t *testing.T) {
	gaters := make([]*linkGater, 4)
	nodes, metrics := startMesh(t, 4, func(i int, c *Config) {
		gaters[i] = &linkGater{}
		c.connGater = gaters[i]
	})
	a, b, c, d := nodes[0], nodes[1], nodes[2], nodes[3]
	mb, mc := metrics[1], metrics[2]
	before := mb.probed(false) + mc.probed(false)
	gaters[1].block(c.Self())
	gaters[2].block(b.Self())
	b.Host().Network().ClosePeer(c.Self())
	c.Host().Network().ClosePeer(b.Self())
	waitFor(t, "b and c each fail to probe the other", func() (bool, string) {
		return mb.probed(false) > 0 && mc.probed(false) > 0,
			fmt.Sprintf("failed probes: b %d, c %d (before %d)", mb.probed(false), mc.probed(false), before)
	})
	// Every failure path (probe round, suspicion timer, silence) has run its
	// course well within this.
	time.Sleep(3*a.cfg.DeadTimeout + a.cfg.SuspectTimeout)
	if b.Host().Network().Connectedness(c.Self()) == network.Connected {
		t.Fatal("b and c are connected; the test means to cut their link")
	}
	noDeaths(t, nodes, metrics)
	for _, n := range nodes {
		if ok, msg := seesAlive(n, nodes...); !ok {
			t.Error(msg)
		}
	}

	d.crash(t)
	survivors := []*testNode{a, b, c}
	for _, n := range survivors {
		waitFor(t, "d dead", func() (bool, string) {
			st, _ := stateOf(n, d.Self())
			return st == Dead, short(n.Self()) + " sees d " + st.String()
		})
	}
	for _, n := range survivors {
		if ok, msg := seesAlive(n, survivors...); !ok {
			t.Error(msg)
		}
	}
}

// TestProbeRequestRoles: a probe request about the requester itself, about
// the helper, or from another mesh is dropped and counted; a well-formed one
// from a stranger (not a member) is not answered.
func TestProbeRequestRoles(t *testing.T) {
	nodes, metrics := startMesh(t, 2, nil)
	a, b := nodes[0], nodes[1]
	x := newHostile(t, a)
	ask := func(q *probeRequest) error {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		s, err := x.host.NewStream(ctx, a.Self(), probeProtocol)
		if err != nil {
			t.Fatalf("open probe stream: %v", err)
		}
		defer s.Close()
		req, err := encodeProbeRequest(nil, q)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(req); err != nil {
			return err
		}
		if err := s.CloseWrite(); err != nil {
			return err
		}
		buf := make([]byte, maxProbeReplyLen)
		_, err = s.Read(buf)
		return err
	}
	for _, c := range []struct {
		reason string
		q      probeRequest
	}{
		{reasonBadProbe, probeRequest{Mesh: a.cfg.Mesh, Target: x.id}},
		{reasonBadProbe, probeRequest{Mesh: a.cfg.Mesh, Target: a.Self()}},
		{reasonWrongMesh, probeRequest{Mesh: "other", Target: b.Self()}},
	} {
		before := metrics[0].count(c.reason)
		if err := ask(&c.q); err == nil {
			t.Errorf("%s: got a reply, want the stream reset", c.reason)
		}
		if got := metrics[0].count(c.reason); got != before+1 {
			t.Errorf("%s: counted %d, want %d", c.reason, got, before+1)
		}
	}
	if err := ask(&probeRequest{Mesh: a.cfg.Mesh, Target: b.Self()}); err == nil {
		t.Error("stranger's request: got a reply, want none")
	}

	// A member's request is served, if it is about a member.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if reached, err := b.askHelper(ctx, a.Self(), x.id); err == nil {
		t.Errorf("request about a non-member: got %v, want no answer", reached)
	}
	cfg := localConfig(t.TempDir())
	cfg.Join = []string{a.joinAddr()}
	third := startNode(t, cfg, nil)
	for _, n := range nodes {
		waitFor(t, "3 alive", func() (bool, string) { return seesAlive(n, a, b, third) })
	}
	if reached, err := b.askHelper(ctx, a.Self(), third.Self()); err != nil || !reached {
		t.Errorf("member's request: reached %v, err %v; want reached", reached, err)
	}
}
