package mesh

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

func newTestTable(t *testing.T) (*table, peer.ID, peer.ID) {
	cfg := LocalConfig()
	self, other := fixedID(t, 10), fixedID(t, 11)
	return newTable(self, cfg, NopMetrics{}), self, other
}

func hb(id peer.ID, inc uint64) *heartbeat {
	return &heartbeat{Mesh: "default", Sender: id, Incarnation: inc, State: Alive,
		Addrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/10.0.0.2/tcp/4001")}}
}

func note(kind State, from, about peer.ID, inc uint64) *failureNotice {
	return &failureNotice{Mesh: "default", Sender: from, Kind: kind, Subject: about, Incarnation: inc}
}

func TestTableIncarnationRules(t *testing.T) {
	tb, self, p := newTestTable(t)
	third := fixedID(t, 12)
	t0 := time.Unix(1000, 0)
	if fx := tb.heartbeat(hb(p, 2), t0); !fx.changed {
		t.Fatal("new member: want changed")
	}
	state := func() State { return tb.members[p].State }

	// A notice about an older incarnation does not kill a newer one.
	tb.failure(note(Dead, third, p, 1), t0)
	if state() != Alive {
		t.Fatalf("after dead@1 for inc 2: %v, want alive", state())
	}
	// A stale heartbeat is ignored.
	tb.heartbeat(hb(p, 1), t0)
	if tb.members[p].Incarnation != 2 {
		t.Fatalf("stale heartbeat changed incarnation to %d", tb.members[p].Incarnation)
	}
	// Dead at the current incarnation kills; the same incarnation does not
	// revive but re-announces the death (once per DeadTimeout).
	tb.failure(note(Dead, third, p, 2), t0)
	if state() != Dead {
		t.Fatalf("after dead@2: %v, want dead", state())
	}
	fx := tb.heartbeat(hb(p, 2), t0.Add(tb.dead))
	if state() != Dead || len(fx.notices) != 1 || fx.notices[0].Kind != Dead {
		t.Fatalf("heartbeat@2 of dead member: state %v, notices %+v; want dead, one dead notice", state(), fx.notices)
	}
	if fx := tb.heartbeat(hb(p, 2), t0.Add(tb.dead+time.Millisecond)); len(fx.notices) != 0 {
		t.Fatalf("re-announced twice within DeadTimeout: %+v", fx.notices)
	}
	// A higher incarnation revives.
	tb.heartbeat(hb(p, 3), t0)
	if state() != Alive {
		t.Fatalf("after heartbeat@3: %v, want alive", state())
	}
	// Left is final for its incarnation; dead does not overwrite it.
	tb.failure(note(Left, p, p, 3), t0)
	tb.failure(note(Dead, third, p, 3), t0)
	if state() != Left {
		t.Fatalf("after left@3, dead@3: %v, want left", state())
	}
	// A notice about self asks for a refutation, unless we sent it.
	if fx := tb.failure(note(Suspect, third, self, 5), t0); fx.refute != 5 {
		t.Fatalf("suspect about self: refute %d, want 5", fx.refute)
	}
	if fx := tb.failure(note(Left, self, self, 5), t0); fx.refute != 0 {
		t.Fatalf("own leave: refute %d, want 0", fx.refute)
	}
	// Our own heartbeat is not a member.
	tb.heartbeat(hb(self, 9), t0)
	if _, ok := tb.members[self]; ok {
		t.Fatal("self added as a member")
	}
}

func TestTableTimers(t *testing.T) {
	tb, _, p := newTestTable(t)
	t0 := time.Unix(1000, 0)
	tb.heartbeat(hb(p, 1), t0)

	// Missed heartbeats: suspect, with a suspect notice and a probe.
	fx := tb.tick(t0.Add(tb.suspect + time.Millisecond))
	if tb.members[p].State != Suspect || len(fx.probes) != 1 || len(fx.notices) != 1 {
		t.Fatalf("after suspect timeout: %v, probes %v, notices %v", tb.members[p].State, fx.probes, fx.notices)
	}
	// A successful probe keeps it suspect; a heartbeat clears it.
	tb.probed(fx.probes[0], true, t0)
	tb.heartbeat(hb(p, 1), t0.Add(tb.suspect+2*time.Millisecond))
	if tb.members[p].State != Alive {
		t.Fatalf("heartbeat after suspicion: %v, want alive", tb.members[p].State)
	}
	// Fast path: suspect now; a failed probe is death with a notice.
	fx = tb.suspectNow(p, t0)
	if len(fx.probes) != 1 {
		t.Fatalf("suspectNow: probes %v, want 1", fx.probes)
	}
	fx = tb.probed(fx.probes[0], false, t0)
	if tb.members[p].State != Dead || len(fx.notices) != 1 || fx.notices[0].Kind != Dead {
		t.Fatalf("failed probe: %v, notices %v; want dead and a notice", tb.members[p].State, fx.notices)
	}
	if d := tb.deadAddrs(); len(d) != 1 || d[0].ID != p || len(d[0].Addrs) != 1 {
		t.Fatalf("deadAddrs: %v, want p with its address", d)
	}
	// Dead members are forgotten after ForgetAfter.
	tb.tick(t0.Add(tb.forget + time.Second))
	if _, ok := tb.members[p]; ok {
		t.Fatal("dead member not forgotten")
	}

	// Suspect without heartbeats for DeadTimeout is dead, even if probes
	// succeed.
	tb.heartbeat(hb(p, 4), t0)
	fx = tb.suspectNow(p, t0)
	tb.probed(fx.probes[0], true, t0)
	fx = tb.tick(t0.Add(tb.dead + time.Millisecond))
	if tb.members[p].State != Dead || len(fx.notices) != 1 {
		t.Fatalf("suspect past DeadTimeout: %v, notices %v; want dead", tb.members[p].State, fx.notices)
	}
}

func TestStateText(t *testing.T) {
	for _, s := range []State{Alive, Suspect, Dead, Left} {
		b, err := s.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var got State
		if err := got.UnmarshalText(b); err != nil || got != s {
			t.Errorf("round trip %v: got %v, %v", s, got, err)
		}
	}
	if _, err := State(9).MarshalText(); err == nil {
		t.Error("MarshalText(9): want error")
	}
}
