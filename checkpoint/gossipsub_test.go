package checkpoint

import (
	"context"
	"slices"
	"testing"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// psAnnouncer is the adapter shape node builds over the mesh's checkpoint
// topic: the author returned by Next is the signed origin (GetFrom), not
// the relaying peer.
type psAnnouncer struct {
	topic *pubsub.Topic
	sub   *pubsub.Subscription
}

func (a *psAnnouncer) Publish(ctx context.Context, data []byte) error {
	return a.topic.Publish(ctx, data)
}

func (a *psAnnouncer) Next(ctx context.Context) ([]byte, peer.ID, error) {
	m, err := a.sub.Next(ctx)
	if err != nil {
		return nil, "", err
	}
	return m.Data, m.GetFrom(), nil
}

var _ Announcer = (*psAnnouncer)(nil)

func joinGossip(t *testing.T, ctx context.Context, n *tnode) *psAnnouncer {
	t.Helper()
	ps, err := pubsub.NewGossipSub(ctx, n.h,
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		pubsub.WithMaxMessageSize(4<<10))
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join("ringmesh/test/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Cancel(); topic.Close() })
	return &psAnnouncer{topic: topic, sub: sub}
}

// TestGossipsubAnnouncements runs the catalog over a real gossipsub topic
// with StrictSign: honest announcements arrive with their author, and one
// forged by another peer is rejected.
func TestGossipsubAnnouncements(t *testing.T) {
	ctx := testCtx(t)
	psCtx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	a, b, evil := newNode(t), newNode(t), newNode(t)
	link(a.h, b.h, evil.h)
	for _, n := range []*tnode{b, evil} {
		if err := n.h.Connect(ctx, peer.AddrInfo{ID: a.h.ID(), Addrs: a.h.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	annA, annB, annEvil := joinGossip(t, psCtx, a), joinGossip(t, psCtx, b), joinGossip(t, psCtx, evil)
	ca, cb := newCatalog(t, a, annA), newCatalog(t, b, annB)
	runBG(t, ca.Run)
	runBG(t, cb.Run)
	go func() { // evil drains its subscription
		for {
			if _, _, err := annEvil.Next(psCtx); err != nil {
				return
			}
		}
	}()

	src, _ := writeRandom(t, 70<<10, 4)
	root := saveOn(t, src, 8, a)
	// ca re-announces every 200 ms, so it arrives once the mesh has formed.
	eventually(t, "b learns a over gossipsub", func() bool { return slices.Equal(cb.Providers(root), ids(a)) })

	forged, err := Announcement{Step: 1000, Root: Root{5}, Size: 1, Provider: a.h.ID()}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "forged announcement rejected", func() bool {
		if err := annEvil.Publish(ctx, forged); err != nil {
			t.Fatalf("publish: %v", err)
		}
		return b.metrics.rejectedCount("forged") > 0
	})
	for _, k := range cb.List() {
		if k.Root == (Root{5}) {
			t.Fatalf("forged checkpoint recorded: %+v", k)
		}
	}
	if k, ok := cb.LatestComplete(); !ok || k.Root != root {
		t.Fatalf("LatestComplete = %+v, %v; want the honest step 8", k, ok)
	}
}
