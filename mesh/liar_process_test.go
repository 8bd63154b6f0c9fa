package mesh_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"

	"github.com/ringmesh/ringmesh/internal/systest"
	"github.com/ringmesh/ringmesh/mesh"
)

// TestLiarMemberAgainstProcesses is the forged-notice test of the security
// issue on real processes: three `ringmesh node` processes train (exact
// sums checked on every round) while a fourth member, a Mesh in the test
// process holding the mesh secret, declares one of them dead at its newest
// incarnation fifty times a second for several dead timeouts, and at
// incarnations 2^64-1 and 2^21 above it. The victim stays alive in every
// node's view, no node ever declares it dead, its incarnation rises only
// by paced refutations (proof the forged notices were read, and that they
// cannot wrap it), and every node's trainer keeps applying rounds.
func TestLiarMemberAgainstProcesses(t *testing.T) {
	root := t.TempDir()
	ps := systest.Cluster(t, root, 3, "--min-members", "3")
	victim := ps[1]

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var mu sync.Mutex
	applied := map[string][]time.Time{}
	var wg sync.WaitGroup
	tctx, stopTrainers := context.WithCancel(ctx)
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &systest.Synthetic{Dir: p.Dir, Size: 4096, Steps: math.MaxUint64, Pause: 5 * time.Millisecond, Exact: true,
				Record: func(a systest.Applied) {
					mu.Lock()
					applied[p.Dir] = append(applied[p.Dir], a.At)
					mu.Unlock()
				}}
			if err := s.Run(tctx); err != nil && tctx.Err() == nil {
				t.Errorf("trainer on %s: %v", filepath.Base(p.Dir), err)
			}
		}()
	}
	defer func() {
		stopTrainers()
		wg.Wait()
	}()
	appliedSince := func(dir string, since time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, at := range applied[dir] {
			if at.After(since) {
				n++
			}
		}
		return n
	}
	systest.Eventually(t, 2*time.Minute, func() error {
		for _, p := range ps {
			if n := appliedSince(p.Dir, time.Time{}); n < 5 {
				return fmt.Errorf("%s applied %d rounds", filepath.Base(p.Dir), n)
			}
		}
		return nil
	})

	// The liar: a member with the secret, as fast as the nodes
	// (--fast-detect).
	liar, cfg, stopLiar := systest.Member(t, ctx, root, "", ps[0].Addr)
	victimInc := func(v mesh.View) (mesh.State, uint64, bool) {
		for _, m := range v.Members {
			if m.ID.String() == victim.ID {
				return m.State, m.Incarnation, true
			}
		}
		return 0, 0, false
	}
	systest.Eventually(t, time.Minute, func() error {
		for _, p := range ps {
			st, err := systest.Status(p.Dir)
			if err != nil {
				return err
			}
			seen := false
			for _, m := range st.Members {
				seen = seen || (m.ID == liar.Self().String() && m.State == mesh.Alive.String())
			}
			if !seen {
				return fmt.Errorf("%s does not see the liar alive yet", filepath.Base(p.Dir))
			}
		}
		if st, _, ok := victimInc(liar.View()); !ok || st != mesh.Alive {
			return fmt.Errorf("the liar does not see the victim alive yet")
		}
		return nil
	})
	_, inc0, _ := victimInc(liar.View())

	victimID, err := peer.Decode(victim.ID)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	forge := func(kind mesh.State, inc uint64) {
		b, err := mesh.EncodeFailureNotice(cfg.Mesh, liar.Self(), kind, victimID, inc)
		if err != nil {
			t.Fatal(err)
		}
		if err := liar.PublishRawFailure(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// The liar's own validator refuses to publish implausible notices, so
	// those go out from a raw gossipsub host of the test process that
	// holds the secret too.
	raw := rawPublisher(t, ctx, cfg.PSKFile, liar.TopicName("failure"), ps)
	forgeRaw := func(kind mesh.State, inc uint64) {
		b, err := mesh.EncodeFailureNotice(cfg.Mesh, raw.ID(), kind, victimID, inc)
		if err != nil {
			t.Fatal(err)
		}
		if err := raw.topic.Publish(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	sent := 0
	for time.Since(start) < 4*cfg.DeadTimeout {
		_, inc, _ := victimInc(liar.View())
		forge(mesh.Dead, inc)
		if sent%10 == 0 {
			forgeRaw(mesh.Dead, math.MaxUint64)
			forgeRaw(mesh.Suspect, inc+1<<21)
		}
		sent++
		time.Sleep(20 * time.Millisecond)
	}
	forged := time.Since(start)
	stopLiar() // the liar stops lying (and leaves)

	var final uint64
	systest.Eventually(t, time.Minute, func() error {
		for _, p := range ps {
			st, err := systest.Status(p.Dir)
			if err != nil {
				return err
			}
			for _, m := range st.Members {
				if m.ID == victim.ID && m.State != mesh.Alive.String() {
					return fmt.Errorf("%s sees the victim %v", filepath.Base(p.Dir), m.State)
				}
			}
		}
		return nil
	})
	st, err := systest.Status(ps[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st.Members {
		if m.ID == victim.ID {
			final = m.Incarnation
		}
	}
	t.Logf("%d forged notices in %v; the victim's incarnation went from %d to %d", sent, forged.Round(time.Millisecond), inc0, final)
	if final <= inc0 {
		t.Errorf("the victim's incarnation is %d, was %d: it never refuted, so the forged notices were not read", final, inc0)
	}
	if most := inc0 + uint64(forged/cfg.HeartbeatInterval) + 3; final > most {
		t.Errorf("the victim's incarnation went from %d to %d in %v of %d forged notices; paced refutations allow at most %d", inc0, final, forged.Round(time.Millisecond), sent, most)
	}
	for _, p := range ps {
		log, _ := os.ReadFile(p.Log)
		if bytes.Contains(log, []byte(`msg="member state" component=mesh peer=`+victim.ID+` state=dead`)) {
			t.Errorf("%s declared the victim dead", filepath.Base(p.Dir))
		}
		if !bytes.Contains(log, []byte("dropped: implausible incarnation")) {
			t.Errorf("%s never dropped a notice at an implausible incarnation", filepath.Base(p.Dir))
		}
	}
	after := time.Now()
	systest.Eventually(t, time.Minute, func() error {
		for _, p := range ps {
			if n := appliedSince(p.Dir, after); n < 3 {
				return fmt.Errorf("%s applied %d rounds after the forging", filepath.Base(p.Dir), n)
			}
		}
		return nil
	})
	if n := appliedSince(victim.Dir, start) - appliedSince(victim.Dir, start.Add(forged)); n == 0 {
		t.Errorf("the victim's trainer applied no round while it was accused")
	}
}

// rawHost is a libp2p host with its own gossipsub joined to one topic: it
// publishes whatever bytes it is given, signed by itself.
type rawHost struct {
	host.Host
	topic *pubsub.Topic
}

// rawPublisher starts a rawHost in the private network of pskFile,
// connected to every node in ps, and waits until they are its topic peers.
func rawPublisher(t *testing.T, ctx context.Context, pskFile, topic string, ps []*systest.Proc) *rawHost {
	t.Helper()
	f, err := os.Open(pskFile)
	if err != nil {
		t.Fatal(err)
	}
	psk, err := pnet.DecodeV1PSK(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.PrivateNetwork(psk), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	gctx, cancel := context.WithCancel(ctx)
	t.Cleanup(func() {
		cancel()
		h.Close()
	})
	g, err := pubsub.NewGossipSub(gctx, h)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := g.Join(topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		ai, err := peer.AddrInfoFromString(p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Connect(ctx, *ai); err != nil {
			t.Fatal(err)
		}
		systest.Eventually(t, time.Minute, func() error {
			if !slices.Contains(tp.ListPeers(), ai.ID) {
				return fmt.Errorf("%s is not a topic peer of the raw host yet", filepath.Base(p.Dir))
			}
			return nil
		})
	}
	return &rawHost{Host: h, topic: tp}
}
