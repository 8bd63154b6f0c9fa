package mesh

import (
	"bytes"
	"context"
	"math"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// hostile is a raw libp2p host with its own gossipsub, joined to a mesh's
// topics, that publishes whatever bytes it is told to (properly signed by
// itself).
type hostile struct {
	host   host.Host
	id     peer.ID
	ps     *pubsub.PubSub
	topics map[string]*pubsub.Topic
}

// newHostile connects the hostile host to target and to more (so each gets
// its messages first-hand) and waits until all are its topic peers.
func newHostile(t *testing.T, target *testNode, more ...*testNode) *hostile {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		h.Close()
	})
	ps, err := pubsub.NewGossipSub(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	x := &hostile{host: h, id: h.ID(), ps: ps, topics: make(map[string]*pubsub.Topic)}
	for _, kind := range []string{topicHeartbeat, topicFailure} {
		name := target.TopicName(kind)
		tp, err := ps.Join(name)
		if err != nil {
			t.Fatal(err)
		}
		x.topics[kind] = tp
	}
	cctx, ccancel := context.WithTimeout(ctx, testTimeout)
	defer ccancel()
	for _, n := range append([]*testNode{target}, more...) {
		if err := h.Connect(cctx, peer.AddrInfo{ID: n.Self(), Addrs: n.Host().Addrs()}); err != nil {
			t.Fatal(err)
		}
		for kind, tp := range x.topics {
			waitFor(t, "hostile sees target on "+kind, func() (bool, string) {
				return slices.Contains(tp.ListPeers(), n.Self()), ""
			})
		}
	}
	return x
}

func (x *hostile) publish(t *testing.T, kind string, b []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := x.topics[kind].Publish(ctx, b); err != nil {
		t.Fatalf("hostile publish: %v", err)
	}
}

// TestHostileGossip: malformed, oversized, forged and otherwise invalid
// messages are rejected and counted; the node keeps running and its view is
// unchanged.
func TestHostileGossip(t *testing.T) {
	metrics := newCountingMetrics()
	a := startNode(t, localConfig(t.TempDir()), metrics)
	cfg := localConfig(t.TempDir())
	cfg.Join = []string{a.joinAddr()}
	b := startNode(t, cfg, nil)
	for _, n := range []*testNode{a, b} {
		waitFor(t, "a and b alive", func() (bool, string) { return seesAlive(n, a, b) })
	}
	bInc := b.Incarnation()
	x := newHostile(t, a)

	forged := sampleHeartbeat(t)
	forged.Mesh, forged.Sender, forged.Incarnation = a.cfg.Mesh, b.Self(), bInc+100
	forgedB, _ := encodeHeartbeat(nil, forged)
	big := sampleHeartbeat(t)
	big.Mesh, big.Sender, big.Payload = a.cfg.Mesh, x.id, bytes.Repeat([]byte{'x'}, a.cfg.MaxPayload+1)
	bigB, _ := encodeHeartbeat(nil, big)
	wrongMesh := sampleHeartbeat(t)
	wrongMesh.Sender = x.id
	wrongMeshB, _ := encodeHeartbeat(nil, wrongMesh) // mesh "lab"
	leaveB, _ := encodeFailure(nil, &failureNotice{Mesh: a.cfg.Mesh, Sender: x.id, Kind: Left, Subject: b.Self(), Incarnation: bInc})
	deadB, _ := encodeFailure(nil, &failureNotice{Mesh: a.cfg.Mesh, Sender: b.Self(), Kind: Dead, Subject: b.Self(), Incarnation: bInc})
	selfDeadB, _ := encodeFailure(nil, &failureNotice{Mesh: a.cfg.Mesh, Sender: x.id, Kind: Dead, Subject: x.id, Incarnation: 1})
	lastB, _ := encodeFailure(nil, &failureNotice{Mesh: a.cfg.Mesh, Sender: x.id, Kind: Suspect, Subject: b.Self(), Incarnation: math.MaxUint64})
	deadHB := sampleHeartbeat(t)
	deadHB.Mesh, deadHB.Sender, deadHB.State = a.cfg.Mesh, x.id, Dead
	deadHBB, _ := encodeHeartbeat(nil, deadHB)

	cases := []struct {
		kind, reason string
		data         []byte
	}{
		{topicHeartbeat, reasonMalformed, []byte("not a heartbeat")},
		{topicHeartbeat, reasonOversized, bytes.Repeat([]byte{1}, a.cfg.MaxMessageSize+1)},
		{topicHeartbeat, reasonForgedSender, forgedB},
		{topicHeartbeat, reasonWrongMesh, wrongMeshB},
		{topicHeartbeat, reasonPayloadTooLarge, bigB},
		{topicFailure, reasonBadLeave, leaveB},
		{topicFailure, reasonForgedSender, deadB},
		{topicFailure, reasonMalformed, []byte{1, 2, 3}},
		{topicFailure, reasonBadNotice, selfDeadB},
		{topicFailure, reasonImplausibleIncarnation, lastB},
		{topicHeartbeat, reasonBadState, deadHBB},
	}
	for _, c := range cases {
		before := metrics.count(c.reason)
		x.publish(t, c.kind, c.data)
		waitFor(t, c.reason+" counted", func() (bool, string) {
			return metrics.count(c.reason) > before, ""
		})
	}

	// Still running, view unchanged: no hostile member, b as b itself says
	// (not the forged incarnation or GPUs), and a keeps hearing b.
	v := a.View()
	if len(v.Members) != 2 {
		t.Errorf("a sees %d members, want 2", len(v.Members))
	}
	mb, _ := v.Member(b.Self())
	if mb.Incarnation >= forged.Incarnation || len(mb.Caps.GPUs) != 0 {
		t.Errorf("a took the forged heartbeat: b at incarnation %d with GPUs %v", mb.Incarnation, mb.Caps.GPUs)
	}
	waitFor(t, "a still hears b", func() (bool, string) {
		m, _ := a.View().Member(b.Self())
		return m.LastSeen.After(mb.LastSeen) && m.State == Alive, m.State.String()
	})
}
