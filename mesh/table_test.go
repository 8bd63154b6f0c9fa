package mesh

import (
	"log/slog"
	"math"
	"slices"
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
	tb.heartbeat(hb(third, 1), t0)
	state := func() State { return tb.members[p].State }

	// A notice about an older incarnation does nothing.
	if fx := tb.failure(note(Dead, third, p, 1), t0); state() != Alive || len(fx.probes) != 0 {
		t.Fatalf("after dead@1 for inc 2: %v, probes %v; want alive, no probe", state(), fx.probes)
	}
	// A stale heartbeat is ignored.
	tb.heartbeat(hb(p, 1), t0)
	if tb.members[p].Incarnation != 2 {
		t.Fatalf("stale heartbeat changed incarnation to %d", tb.members[p].Incarnation)
	}
	// Dead at the current incarnation from another member is one vote: p
	// stays alive and we probe it ourselves.
	fx := tb.failure(note(Dead, third, p, 2), t0)
	if state() != Alive || len(fx.probes) != 1 || len(fx.notices) != 0 {
		t.Fatalf("after dead@2 from one member: %v, probes %v, notices %v; want alive, one probe, no notice",
			state(), fx.probes, fx.notices)
	}
	// Our own failed probe round makes it suspect, and the timer dead.
	tb.probed(fx.probes[0], probeResult{}, t0)
	if state() != Suspect {
		t.Fatalf("after a failed probe: %v, want suspect", state())
	}
	tb.tick(t0.Add(tb.dead))
	if state() != Dead {
		t.Fatalf("after DeadTimeout of suspicion: %v, want dead", state())
	}
	// The same incarnation does not revive but re-announces the death (once
	// per DeadTimeout).
	fx = tb.heartbeat(hb(p, 2), t0.Add(2*tb.dead))
	if state() != Dead || len(fx.notices) != 1 || fx.notices[0].Kind != Dead {
		t.Fatalf("heartbeat@2 of dead member: state %v, notices %+v; want dead, one dead notice", state(), fx.notices)
	}
	if fx := tb.heartbeat(hb(p, 2), t0.Add(2*tb.dead+time.Millisecond)); len(fx.notices) != 0 {
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

	// Missed heartbeats: suspect (our own evidence), with a suspect notice
	// and a probe.
	fx := tb.tick(t0.Add(tb.suspect + time.Millisecond))
	if tb.members[p].State != Suspect || len(fx.probes) != 1 || len(fx.notices) != 1 {
		t.Fatalf("after suspect timeout: %v, probes %v, notices %v", tb.members[p].State, fx.probes, fx.notices)
	}
	// A successful probe keeps it suspect; a heartbeat clears it.
	tb.probed(fx.probes[0], probeResult{reached: true}, t0)
	tb.heartbeat(hb(p, 1), t0.Add(tb.suspect+2*time.Millisecond))
	if tb.members[p].State != Alive || tb.members[p].susp != nil {
		t.Fatalf("heartbeat after suspicion: %v, want alive and no suspicion", tb.members[p].State)
	}
	// A check probes and changes nothing yet; a probe round that reached
	// it (directly or through a helper) leaves it alive.
	t0 = t0.Add(tb.suspect + 10*time.Millisecond)
	fx = tb.check(p, t0)
	if len(fx.probes) != 1 || tb.members[p].State != Alive || len(fx.notices) != 0 {
		t.Fatalf("check: probes %v, state %v, notices %v; want one probe, alive, no notice", fx.probes, tb.members[p].State, fx.notices)
	}
	if fx := tb.check(p, t0); len(fx.probes) != 0 {
		t.Fatalf("second check while probing: probes %v, want none", fx.probes)
	}
	tb.probed(fx.probes[0], probeResult{reached: true}, t0)
	if tb.members[p].State != Alive {
		t.Fatalf("reached: %v, want alive", tb.members[p].State)
	}
	// A failed round is suspicion with a notice, not death. With no
	// other member to confirm, the suspicion lasts the minimum.
	fx = tb.check(p, t0)
	fx = tb.probed(fx.probes[0], probeResult{}, t0)
	if tb.members[p].State != Suspect || len(fx.notices) != 1 || fx.notices[0].Kind != Suspect {
		t.Fatalf("failed probe: %v, notices %v; want suspect and a suspect notice", tb.members[p].State, fx.notices)
	}
	if tb.tick(t0.Add(tb.minSuspect - time.Millisecond)); tb.members[p].State != Suspect {
		t.Fatalf("before the minimum suspicion: %v, want suspect", tb.members[p].State)
	}
	fx = tb.tick(t0.Add(tb.minSuspect))
	if tb.members[p].State != Dead || len(fx.notices) != 1 || fx.notices[0].Kind != Dead {
		t.Fatalf("suspicion expired: %v, notices %v; want dead and a notice", tb.members[p].State, fx.notices)
	}
	if d := tb.deadAddrs(); len(d) != 1 || d[0].ID != p || len(d[0].Addrs) != 1 {
		t.Fatalf("deadAddrs: %v, want p with its address", d)
	}
	// Dead members are forgotten after ForgetAfter.
	tb.tick(t0.Add(tb.forget + time.Second))
	if _, ok := tb.members[p]; ok {
		t.Fatal("dead member not forgotten")
	}
	// A probe round that ends after a heartbeat was heard is no evidence.
	tb.heartbeat(hb(p, 4), t0)
	fx = tb.check(p, t0)
	tb.heartbeat(hb(p, 4), t0.Add(time.Millisecond))
	if tb.probed(fx.probes[0], probeResult{}, t0.Add(2*time.Millisecond)); tb.members[p].State != Alive {
		t.Fatalf("failed round that a heartbeat overtook: %v, want alive", tb.members[p].State)
	}
}

// fourTable is a table of self and three members p, q, r, all alive.
func fourTable(t *testing.T, metrics Metrics) (tb *table, p, q, r peer.ID) {
	tb = newTable(fixedID(t, 10), LocalConfig(), metrics)
	p, q, r = fixedID(t, 11), fixedID(t, 12), fixedID(t, 13)
	for _, id := range []peer.ID{p, q, r} {
		tb.heartbeat(hb(id, 5), time.Unix(1000, 0))
	}
	return tb, p, q, r
}

// TestTableFailureNoticesAreVotes: notices from other members never by
// themselves make a member suspect or dead in our view, however many; they
// start our own probe, and shorten our suspicion once we could not reach it
// either.
func TestTableFailureNoticesAreVotes(t *testing.T) {
	tb, p, q, r := fourTable(t, NopMetrics{})
	t0 := time.Unix(1000, 0)
	fx := tb.failure(note(Dead, q, p, 5), t0)
	if len(fx.probes) != 1 {
		t.Fatalf("dead notice: probes %v, want one", fx.probes)
	}
	helpers := fx.probes[0].helpers
	if len(helpers) != 2 || slices.Contains(helpers, p) {
		t.Fatalf("helpers %v, want q and r", helpers)
	}
	tb.failure(note(Suspect, r, p, 5), t0)
	tb.failure(note(Dead, q, p, 5), t0)
	tb.probed(fx.probes[0], probeResult{reached: true}, t0)
	// Past the shortest suspicion, up to when p's silence would be our own
	// evidence, p stays alive: their votes are not ours.
	for _, at := range []time.Duration{tb.minSuspect, tb.suspect} {
		if fx := tb.tick(t0.Add(at)); tb.members[p].State != Alive || len(fx.notices) != 0 {
			t.Fatalf("two members' notices, %v later: p is %v, notices %v; want alive, none", at, tb.members[p].State, fx.notices)
		}
	}
	if s := tb.members[p].susp; s == nil || len(s.votes) != 2 {
		t.Fatalf("suspicion %+v, want q's and r's votes", s)
	}
	// A heartbeat clears every vote against that incarnation.
	tb.heartbeat(hb(p, 5), t0)
	if tb.members[p].susp != nil {
		t.Fatal("heartbeat did not clear the suspicion")
	}
	// Votes from members we do not know, or consider dead, do not count.
	stranger := fixedID(t, 20)
	if fx := tb.failure(note(Dead, stranger, p, 5), t0); len(fx.probes) != 0 || tb.members[p].susp != nil {
		t.Fatalf("stranger's notice: probes %v, suspicion %+v; want none", fx.probes, tb.members[p].susp)
	}
	// A notice a little ahead of the incarnation we know counts against the
	// known one; it never raises it (only the member's heartbeat does).
	tb.failure(note(Dead, q, p, 9), t0)
	if m := tb.members[p]; m.Incarnation != 5 || m.susp == nil || !m.susp.votes[q] {
		t.Fatalf("dead@9 for inc 5: incarnation %d, suspicion %+v; want 5 and q's vote", m.Incarnation, m.susp)
	}
}

// TestTableConfirmationsShortenSuspicion: our suspicion lasts DeadTimeout
// alone, less with each independent vote, the minimum with enough of them
// (two in a four-member mesh: everyone else).
func TestTableConfirmationsShortenSuspicion(t *testing.T) {
	tb, p, q, r := fourTable(t, NopMetrics{})
	t0 := time.Unix(1000, 0)
	fx := tb.check(p, t0)
	tb.probed(fx.probes[0], probeResult{}, t0) // no helper answered
	if tb.tick(t0.Add(tb.dead - time.Millisecond)); tb.members[p].State != Suspect {
		t.Fatalf("alone, before DeadTimeout: %v, want suspect", tb.members[p].State)
	}
	fxq := tb.failure(note(Suspect, q, p, 5), t0)
	tb.failure(note(Suspect, q, p, 5), t0) // one member, one vote
	// Its notice starts another round of ours; one that reaches p clears
	// nothing (reachable but silent is a hung member: only a heartbeat
	// clears a suspicion).
	tb.probed(fxq.probes[0], probeResult{reached: true}, t0)
	one := suspicionTimeout(2, 2, tb.minSuspect, tb.dead)
	if one <= tb.minSuspect || one >= tb.dead {
		t.Fatalf("one confirmation: timeout %v, want between %v and %v", one, tb.minSuspect, tb.dead)
	}
	if tb.tick(t0.Add(one - time.Millisecond)); tb.members[p].State != Suspect {
		t.Fatalf("one confirmation, before %v: %v, want suspect", one, tb.members[p].State)
	}
	if tb.tick(t0.Add(one)); tb.members[p].State != Dead {
		t.Fatalf("one confirmation, at %v: %v, want dead", one, tb.members[p].State)
	}

	// Helpers that tried and failed are votes too: the minimum at once.
	tb.heartbeat(hb(p, 6), t0)
	fx = tb.check(p, t0)
	tb.probed(fx.probes[0], probeResult{nacks: []peer.ID{q, r}}, t0)
	if tb.tick(t0.Add(tb.minSuspect - time.Millisecond)); tb.members[p].State != Suspect {
		t.Fatalf("three votes, before the minimum: %v, want suspect", tb.members[p].State)
	}
	if tb.tick(t0.Add(tb.minSuspect)); tb.members[p].State != Dead {
		t.Fatalf("three votes, at the minimum: %v, want dead", tb.members[p].State)
	}
}

// TestTableImplausibleIncarnation: a notice at the last incarnation, or more
// than maxIncarnationSkew above the known one, is dropped and counted.
func TestTableImplausibleIncarnation(t *testing.T) {
	metrics := newCountingMetrics()
	tb, p, q, _ := fourTable(t, metrics)
	t0 := time.Unix(1000, 0)
	for i, inc := range []uint64{math.MaxUint64, 5 + maxIncarnationSkew + 1} {
		fx := tb.failure(note(Dead, q, p, inc), t0)
		if len(fx.probes) != 0 || tb.members[p].susp != nil || tb.members[p].Incarnation != 5 {
			t.Fatalf("dead@%d: probes %v, suspicion %+v, incarnation %d; want dropped", inc, fx.probes, tb.members[p].susp, tb.members[p].Incarnation)
		}
		if fx.dropped == nil || fx.dropped.Incarnation != inc {
			t.Fatalf("dead@%d: dropped %+v, want the notice (to log)", inc, fx.dropped)
		}
		if got := metrics.count(reasonImplausibleIncarnation); got != i+1 {
			t.Fatalf("dead@%d: counted %d, want %d", inc, got, i+1)
		}
	}
	if fx := tb.failure(note(Dead, q, p, 5+maxIncarnationSkew), t0); len(fx.probes) != 1 {
		t.Fatalf("dead at the bound: probes %v, want one (plausible)", fx.probes)
	}
}

func TestSuspicionTimeout(t *testing.T) {
	lo, hi := 250*time.Millisecond, time.Second
	if got := suspicionTimeout(1, 3, lo, hi); got != hi {
		t.Errorf("one vote: %v, want %v", got, hi)
	}
	if got := suspicionTimeout(4, 3, lo, hi); got != lo {
		t.Errorf("k+1 votes: %v, want %v", got, lo)
	}
	if got := suspicionTimeout(9, 3, lo, hi); got != lo {
		t.Errorf("more votes: %v, want %v", got, lo)
	}
	if got := suspicionTimeout(1, 0, lo, hi); got != lo {
		t.Errorf("nobody to confirm: %v, want %v", got, lo)
	}
	prev := hi
	for n := 2; n <= 4; n++ {
		got := suspicionTimeout(n, 3, lo, hi)
		if got >= prev || got < lo {
			t.Errorf("%d votes: %v, want below %v and at least %v", n, got, prev, lo)
		}
		prev = got
	}
	for _, c := range []struct {
		hb, dead, want time.Duration
	}{
		{200 * time.Millisecond, time.Second, 250 * time.Millisecond}, // LocalConfig, --fast-detect
		{time.Second, 4 * time.Second, time.Second},                   // DefaultConfig
		{10 * time.Second, 2 * time.Second, 2 * time.Second},          // capped at DeadTimeout
	} {
		if got := minSuspicion(Config{HeartbeatInterval: c.hb, DeadTimeout: c.dead}); got != c.want {
			t.Errorf("minSuspicion(heartbeat %v, dead %v) = %v, want %v", c.hb, c.dead, got, c.want)
		}
	}
}

func TestPlausibleIncarnation(t *testing.T) {
	const max = math.MaxUint64
	for _, c := range []struct {
		known, claimed uint64
		want           bool
	}{
		{5, 0, true},
		{5, 5, true},
		{5, 5 + maxIncarnationSkew, true},
		{5, 6 + maxIncarnationSkew, false},
		{5, max, false},
		{max - 1, max, false},
		{max, max, false},
		{max - 10, max - 1, true},
		{0, max - 1, false},
	} {
		if got := plausibleIncarnation(c.known, c.claimed); got != c.want {
			t.Errorf("plausibleIncarnation(%d, %d) = %v, want %v", c.known, c.claimed, got, c.want)
		}
	}
}

// TestRefuteArithmetic: the refutation is max(current, notice)+1 and never
// wraps: an implausible notice is dropped and counted.
func TestRefuteArithmetic(t *testing.T) {
	metrics := newCountingMetrics()
	m := &Mesh{cfg: localConfig(t.TempDir()), logger: slog.New(slog.DiscardHandler), metrics: metrics}
	m.incarnation.Store(10)
	steps := []struct {
		notice uint64
		ok     bool
		want   uint64
	}{
		{9, false, 10},                           // older: nothing to refute
		{10, true, 11},                           // current: +1
		{50, true, 51},                           // ahead (plausible): past it
		{math.MaxUint64, false, 51},              // the last value: dropped
		{51 + maxIncarnationSkew + 1, false, 51}, // too far ahead: dropped
		{51 + maxIncarnationSkew, true, 52 + maxIncarnationSkew},
	}
	for _, s := range steps {
		if ok := m.refute(s.notice); ok != s.ok || m.Incarnation() != s.want {
			t.Fatalf("refute(%d): %v, incarnation %d; want %v, %d", s.notice, ok, m.Incarnation(), s.ok, s.want)
		}
	}
	if got := metrics.count(reasonImplausibleIncarnation); got != 2 {
		t.Errorf("implausible notices counted %d, want 2", got)
	}
	if onDisk, err := readIncarnation(m.cfg.DataDir); err != nil || onDisk != m.Incarnation() {
		t.Errorf("on disk %d (%v), want %d", onDisk, err, m.Incarnation())
	}
	if err := writeIncarnation(m.cfg.DataDir, math.MaxUint64); err != nil {
		t.Fatal(err)
	}
	if _, err := bumpIncarnation(m.cfg.DataDir); err == nil {
		t.Error("bumpIncarnation at the last value: want an error, not a wrap to 0")
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
