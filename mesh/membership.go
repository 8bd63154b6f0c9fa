package mesh

import (
	"bytes"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// memberState is a member plus failure-detector bookkeeping.
type memberState struct {
	Member
	since      time.Time // when State was entered
	probing    bool
	lastNotice time.Time // when we last re-announced its death
}

// effects are what the membership table asks its owner to do.
type effects struct {
	notices []failureNotice // publish on the failure topic
	probes  []probeReq      // probe directly
	refute  uint64          // >0: a notice named self at this incarnation
	changed bool            // the view changed (beyond LastSeen)
}

type probeReq struct {
	id  peer.ID
	inc uint64
}

// table is the membership state machine. It does no I/O and reads no clock:
// the owner passes now in and carries out the returned effects. Not safe for
// concurrent use; one goroutine (Mesh.loop) owns it.
type table struct {
	self    peer.ID
	mesh    string
	suspect time.Duration // SuspectTimeout
	dead    time.Duration // DeadTimeout
	forget  time.Duration // ForgetAfter
	metrics Metrics
	members map[peer.ID]*memberState
}

func newTable(self peer.ID, cfg Config, metrics Metrics) *table {
	return &table{
		self: self, mesh: cfg.Mesh, metrics: metrics,
		suspect: cfg.SuspectTimeout, dead: cfg.DeadTimeout, forget: cfg.ForgetAfter,
		members: make(map[peer.ID]*memberState),
	}
}

func (t *table) set(m *memberState, s State, now time.Time, fx *effects) {
	if m.State == s {
		return
	}
	t.metrics.Transition(m.State, s)
	m.State, m.since, m.probing = s, now, false
	fx.changed = true
}

func (t *table) notice(kind State, id peer.ID, inc uint64) failureNotice {
	return failureNotice{Mesh: t.mesh, Sender: t.self, Kind: kind, Subject: id, Incarnation: inc}
}

// heartbeat applies a member's heartbeat.
func (t *table) heartbeat(h *heartbeat, now time.Time) (fx effects) {
	if h.Sender == t.self {
		return fx
	}
	m, ok := t.members[h.Sender]
	if !ok {
		m = &memberState{Member: Member{ID: h.Sender}}
		t.members[h.Sender] = m
		fx.changed = true
	}
	switch {
	case ok && h.Incarnation < m.Incarnation:
		return fx // stale
	case ok && h.Incarnation == m.Incarnation && (m.State == Dead || m.State == Left):
		// Only a higher incarnation revives. Tell a dead member it was
		// declared dead, so it can refute, at most once per DeadTimeout.
		if m.State == Dead && now.Sub(m.lastNotice) >= t.dead {
			m.lastNotice = now
			fx.notices = append(fx.notices, t.notice(Dead, m.ID, m.Incarnation))
		}
		return fx
	}
	if m.Incarnation != h.Incarnation || !slices.EqualFunc(m.Addrs, h.Addrs, multiaddr.Multiaddr.Equal) ||
		!capsEqual(m.Caps, h.Caps) || !bytes.Equal(m.Payload, h.Payload) {
		fx.changed = true
	}
	m.Incarnation, m.Addrs, m.Caps, m.Payload, m.LastSeen = h.Incarnation, h.Addrs, h.Caps, h.Payload, now
	state := Alive
	if h.State == Left {
		state = Left
	}
	t.set(m, state, now, &fx)
	return fx
}

// failure applies a failure notice from another member.
func (t *table) failure(f *failureNotice, now time.Time) (fx effects) {
	if f.Subject == t.self {
		if f.Sender != t.self {
			fx.refute = f.Incarnation
		}
		return fx
	}
	m, ok := t.members[f.Subject]
	if !ok || f.Incarnation < m.Incarnation {
		return fx
	}
	switch f.Kind {
	case Suspect:
		if m.State == Alive {
			t.set(m, Suspect, now, &fx)
			t.startProbe(m, &fx)
		}
	case Dead:
		if m.State != Dead && m.State != Left {
			m.Incarnation = f.Incarnation
			t.set(m, Dead, now, &fx)
		}
	case Left:
		m.Incarnation = f.Incarnation
		t.set(m, Left, now, &fx)
	}
	return fx
}

// suspectNow starts suspicion of an alive member at once (closed connection,
// stream error) and tells the others.
func (t *table) suspectNow(id peer.ID, now time.Time) (fx effects) {
	m, ok := t.members[id]
	if !ok || m.State != Alive {
		return fx
	}
	t.set(m, Suspect, now, &fx)
	fx.notices = append(fx.notices, t.notice(Suspect, id, m.Incarnation))
	t.startProbe(m, &fx)
	return fx
}

func (t *table) startProbe(m *memberState, fx *effects) {
	if !m.probing {
		m.probing = true
		fx.probes = append(fx.probes, probeReq{id: m.ID, inc: m.Incarnation})
	}
}

// probed applies the result of a direct probe. A failed probe is death; a
// successful one leaves the member suspect until a heartbeat clears it or
// DeadTimeout passes.
func (t *table) probed(p probeReq, ok bool, now time.Time) (fx effects) {
	m, found := t.members[p.id]
	if !found || m.Incarnation != p.inc || m.State != Suspect {
		return fx
	}
	if ok {
		return fx // m.probing stays true: one probe per suspicion
	}
	t.set(m, Dead, now, &fx)
	m.lastNotice = now
	fx.notices = append(fx.notices, t.notice(Dead, m.ID, m.Incarnation))
	return fx
}

// tick runs the timers: missed heartbeats, suspicion expiry, forgetting.
func (t *table) tick(now time.Time) (fx effects) {
	for id, m := range t.members {
		switch m.State {
		case Alive:
			if now.Sub(m.LastSeen) > t.suspect {
				t.set(m, Suspect, now, &fx)
				fx.notices = append(fx.notices, t.notice(Suspect, id, m.Incarnation))
				t.startProbe(m, &fx)
			}
		case Suspect:
			if now.Sub(m.since) > t.dead {
				t.set(m, Dead, now, &fx)
				m.lastNotice = now
				fx.notices = append(fx.notices, t.notice(Dead, id, m.Incarnation))
			}
		case Dead, Left:
			if now.Sub(m.since) > t.forget {
				delete(t.members, id)
				fx.changed = true
			}
		}
	}
	return fx
}

// list returns copies of all members, self not included, unsorted.
func (t *table) list() []Member {
	out := make([]Member, 0, len(t.members)+1)
	for _, m := range t.members {
		out = append(out, m.Member)
	}
	return out
}

// deadAddrs lists the dead (not left) members with known addresses.
func (t *table) deadAddrs() []peer.AddrInfo {
	var out []peer.AddrInfo
	for _, m := range t.members {
		if m.State == Dead && len(m.Addrs) > 0 {
			out = append(out, peer.AddrInfo{ID: m.ID, Addrs: m.Addrs})
		}
	}
	return out
}

func capsEqual(a, b Capabilities) bool {
	return a.CPUs == b.CPUs && a.MemoryBytes == b.MemoryBytes && slices.Equal(a.GPUs, b.GPUs)
}
