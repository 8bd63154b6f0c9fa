package mesh

import (
	"bytes"
	"math"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// Failure detection constants (the package doc, Membership, has the rules).
const (
	// indirectChecks is how many other members are asked to probe a member
	// whose direct probe failed (SWIM's ping-req k).
	indirectChecks = 3
	// suspicionConfirmations is how many independent confirmations, beyond
	// the first member that could not reach a member, drive its suspicion
	// to the shortest timeout (fewer in a smaller mesh: one per other
	// member).
	suspicionConfirmations = 3
	// maxIncarnationSkew is how far above the incarnation we know of a
	// member a failure notice about it (or about us) may be. A notice's
	// author is ahead of us only by heartbeats we have not processed yet,
	// and every increment is one restart or one refutation, so honest skew
	// is a handful; 1<<20 leaves six orders of magnitude for long
	// partitions and long ForgetAfter values. It also bounds how far one
	// notice can push a victim's incarnation: exhausting the 64-bit space
	// takes 2^44 notices, each a signed gossip message and an fsync.
	maxIncarnationSkew = 1 << 20
)

// memberState is a member plus failure-detector bookkeeping.
type memberState struct {
	Member
	since      time.Time  // when State was entered
	probing    bool       // a probe round (direct, then indirect) is in flight
	susp       *suspicion // evidence against its current incarnation; nil if none
	lastNotice time.Time  // when we last re-announced its death
}

// suspicion is the evidence against a member's current incarnation: the
// members that could not reach it. Any heartbeat at that incarnation or
// above clears it. It makes the member suspect in our view only once we
// could not reach it either (our own vote), and declares it dead only then,
// after a timeout that independent votes shorten (memberlist's Lifeguard).
type suspicion struct {
	start time.Time
	k     int              // confirmations that drive the timeout to its minimum
	votes map[peer.ID]bool // members, self included, that could not reach it
}

// timeout is how long after start the suspicion declares death.
func (s *suspicion) timeout(lo, hi time.Duration) time.Duration {
	return suspicionTimeout(len(s.votes), s.k, lo, hi)
}

// suspicionTimeout interpolates from hi (one vote) down to lo (k+1 votes or
// more) on a log scale, as memberlist's remainingSuspicionTime: the first
// confirmations count the most.
func suspicionTimeout(votes, k int, lo, hi time.Duration) time.Duration {
	c := votes - 1 // confirmations beyond the first vote
	switch {
	case k < 1 || c >= k:
		return lo
	case c <= 0:
		return hi
	}
	frac := math.Log(float64(c)+1) / math.Log(float64(k)+1)
	return max(hi-time.Duration(frac*float64(hi-lo)), lo)
}

// plausibleIncarnation reports whether a notice may claim incarnation
// claimed about a member whose incarnation we know is known: not the last
// value (no member could ever refute it) and at most maxIncarnationSkew
// above known. Computed without overflow.
func plausibleIncarnation(known, claimed uint64) bool {
	if claimed == math.MaxUint64 {
		return false
	}
	return claimed <= known || claimed-known <= maxIncarnationSkew
}

// effects are what the membership table asks its owner to do.
type effects struct {
	notices []failureNotice // publish on the failure topic
	probes  []probeReq      // probe directly, then through helpers
	refute  uint64          // >0: a notice named self at this incarnation
	changed bool            // the view changed (beyond LastSeen)
	dropped *failureNotice  // a notice dropped (and counted) as implausible: log it
}

// probeReq asks for one probe round of id at incarnation inc, started at
// at; helpers are the members that may be asked to probe it indirectly
// (the owner picks up to indirectChecks of them at random).
type probeReq struct {
	id      peer.ID
	inc     uint64
	at      time.Time
	helpers []peer.ID
}

// probeResult is the outcome of a probe round.
type probeResult struct {
	reached bool      // the member answered us or a helper
	nacks   []peer.ID // helpers that tried and could not reach it
}

// table is the membership state machine. It does no I/O and reads no clock:
// the owner passes now in and carries out the returned effects. Not safe for
// concurrent use; one goroutine (Mesh.loop) owns it.
type table struct {
	self       peer.ID
	mesh       string
	suspect    time.Duration // SuspectTimeout
	dead       time.Duration // DeadTimeout: the longest suspicion
	minSuspect time.Duration // the shortest suspicion
	forget     time.Duration // ForgetAfter
	metrics    Metrics
	members    map[peer.ID]*memberState
}

func newTable(self peer.ID, cfg Config, metrics Metrics) *table {
	return &table{
		self: self, mesh: cfg.Mesh, metrics: metrics,
		suspect: cfg.SuspectTimeout, dead: cfg.DeadTimeout, forget: cfg.ForgetAfter,
		minSuspect: minSuspicion(cfg),
		members:    make(map[peer.ID]*memberState),
	}
}

// minSuspicion is the shortest a suspicion lasts however many members
// confirm it: time for a live member's next heartbeat, or its refutation,
// to arrive. One HeartbeatInterval, at least DeadTimeout/4, at most
// DeadTimeout.
func minSuspicion(cfg Config) time.Duration {
	return min(max(cfg.HeartbeatInterval, cfg.DeadTimeout/4), cfg.DeadTimeout)
}

func (t *table) set(m *memberState, s State, now time.Time, fx *effects) {
	if m.State == s {
		return
	}
	t.metrics.Transition(m.State, s)
	m.State, m.since = s, now
	fx.changed = true
}

func (t *table) notice(kind State, id peer.ID, inc uint64) failureNotice {
	return failureNotice{Mesh: t.mesh, Sender: t.self, Kind: kind, Subject: id, Incarnation: inc}
}

// live reports whether id is a member in the view that is alive or suspect.
func (t *table) live(id peer.ID) bool {
	m, ok := t.members[id]
	return ok && (m.State == Alive || m.State == Suspect)
}

// heartbeat applies a member's heartbeat (signed by the member itself: the
// only way a member's incarnation rises in the table, Left aside).
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
	m.susp = nil // it spoke after every vote against this incarnation was cast
	state := Alive
	if h.State == Left {
		state = Left
	}
	t.set(m, state, now, &fx)
	return fx
}

// failure applies a failure notice from another member. A suspect or dead
// notice is one vote against the subject's current incarnation: it starts
// our own probe of the subject, and never by itself changes our view.
func (t *table) failure(f *failureNotice, now time.Time) (fx effects) {
	if f.Subject == t.self {
		if f.Sender != t.self {
			fx.refute = f.Incarnation // Mesh.refute checks it against our incarnation
		}
		return fx
	}
	m, ok := t.members[f.Subject]
	if !ok {
		return fx
	}
	if !plausibleIncarnation(m.Incarnation, f.Incarnation) {
		t.metrics.InvalidMessage(reasonImplausibleIncarnation)
		fx.dropped = f
		return fx
	}
	if f.Incarnation < m.Incarnation {
		return fx // about an older incarnation
	}
	switch f.Kind {
	case Left: // the validator checked Sender == Subject: the member's own word
		m.Incarnation, m.susp = f.Incarnation, nil
		t.set(m, Left, now, &fx)
	case Suspect, Dead:
		if m.State == Dead || m.State == Left || !t.live(f.Sender) {
			return fx // only members we consider live vote
		}
		t.vote(m, f.Sender, now, &fx)
		t.startProbe(m, now, &fx)
	}
	return fx
}

// vote records that voter could not reach m at its current incarnation.
// Our own vote makes m suspect in the view and is announced to the others.
func (t *table) vote(m *memberState, voter peer.ID, now time.Time, fx *effects) {
	s := m.susp
	if s == nil {
		s = &suspicion{start: now, k: min(suspicionConfirmations, t.voters(m.ID)-1), votes: make(map[peer.ID]bool)}
		m.susp = s
	}
	if s.votes[voter] {
		return
	}
	s.votes[voter] = true
	if voter == t.self {
		t.set(m, Suspect, now, fx)
		fx.notices = append(fx.notices, t.notice(Suspect, m.ID, m.Incarnation))
	}
}

// voters counts the members that could vote against subject: self and the
// live members other than subject.
func (t *table) voters(subject peer.ID) int {
	n := 1
	for id, m := range t.members {
		if id != subject && (m.State == Alive || m.State == Suspect) {
			n++
		}
	}
	return n
}

// check probes an alive or suspect member at once (closed connection,
// stream error). It becomes suspect only if the probe round fails.
func (t *table) check(id peer.ID, now time.Time) (fx effects) {
	m, ok := t.members[id]
	if ok && (m.State == Alive || m.State == Suspect) {
		t.startProbe(m, now, &fx)
	}
	return fx
}

// startProbe asks for a probe round of m unless one is in flight.
func (t *table) startProbe(m *memberState, now time.Time, fx *effects) {
	if m.probing {
		return
	}
	m.probing = true
	var helpers []peer.ID
	for id, h := range t.members {
		if id != m.ID && h.State == Alive {
			helpers = append(helpers, id)
		}
	}
	fx.probes = append(fx.probes, probeReq{id: m.ID, inc: m.Incarnation, at: now, helpers: helpers})
}

// probeDropped forgets a probe round the owner could not start.
func (t *table) probeDropped(id peer.ID) {
	if m, ok := t.members[id]; ok {
		m.probing = false
	}
}

// probed applies the result of a probe round. A member that we or a helper
// reached, or that heartbeated since the round began, gets no vote; else we
// vote against it, and so does every helper that tried and failed.
func (t *table) probed(p probeReq, r probeResult, now time.Time) (fx effects) {
	m, ok := t.members[p.id]
	if !ok {
		return fx
	}
	m.probing = false
	if r.reached || m.Incarnation != p.inc || m.LastSeen.After(p.at) || (m.State != Alive && m.State != Suspect) {
		return fx
	}
	for _, h := range r.nacks {
		if h != m.ID && t.live(h) {
			t.vote(m, h, now, &fx)
		}
	}
	t.vote(m, t.self, now, &fx)
	return fx
}

// tick runs the timers: missed heartbeats, suspicion expiry, forgetting.
func (t *table) tick(now time.Time) (fx effects) {
	for id, m := range t.members {
		switch m.State {
		case Alive:
			if now.Sub(m.LastSeen) > t.suspect {
				// Silence is our own evidence: every member hears every
				// heartbeat through gossip, around any one broken link.
				t.vote(m, t.self, now, &fx)
				t.startProbe(m, now, &fx)
			}
		case Suspect:
			// Suspect in our view means we voted; remote votes alone
			// never get here.
			if s := m.susp; s != nil && s.votes[t.self] && now.Sub(s.start) >= s.timeout(t.minSuspect, t.dead) {
				t.declareDead(m, now, &fx)
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

func (t *table) declareDead(m *memberState, now time.Time, fx *effects) {
	m.susp = nil
	t.set(m, Dead, now, fx)
	m.lastNotice = now
	fx.notices = append(fx.notices, t.notice(Dead, m.ID, m.Incarnation))
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
