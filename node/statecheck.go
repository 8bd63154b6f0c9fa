package node

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/localapi"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// State checks (PROTOCOL.md, "State checks"): every few steps the trainer
// reports a fingerprint of the model state it holds (op state_hash). The
// node advertises its last few reports in the heartbeat payload and
// compares each with the hashes that the live members of the agreed list
// advertise for the same epoch and step. A trainer whose hash is not the
// majority's is told so (Response.StateCheck) and re-syncs from the mesh's
// checkpoint (a join with resync) rather than train on.

const (
	// stateHashLen is how many hex characters of a trainer's hash are
	// advertised and compared (64 bits).
	stateHashLen = localapi.MinStateHash
	// stateAdsKept: own reports advertised, newest first; maxStateAds: a
	// peer's advertised reports read at most.
	stateAdsKept = 4
	maxStateAds  = 8
	// stateCheckWait bounds how long a comparison waits for the members'
	// reports of its step; it is decided with those that came.
	stateCheckWait = 10 * time.Second
	stateCheckTick = 250 * time.Millisecond
	// maxStateReports bounds the own reports kept undecided: an older one
	// is decided at once with what it has.
	maxStateReports = 16
)

// Results of a state check (the result label of ringmesh_state_checks_total).
const (
	stateAgree     = "agree"
	stateDiverged  = "diverged"
	stateUnchecked = "unchecked" // no other member reported the step
)

var stateResults = []string{stateAgree, stateDiverged, stateUnchecked}

// stateAd is one advertised report: the hash of the trainer's state at Step.
type stateAd struct {
	Step uint64
	Hash string
}

// stateAds are a node's advertised reports of one epoch, newest first.
type stateAds struct {
	Epoch uint64
	Ads   []stateAd
}

func (s stateAds) encode() json.RawMessage {
	out := make([][2]any, len(s.Ads))
	for i, a := range s.Ads {
		out[i] = [2]any{a.Step, a.Hash}
	}
	b, _ := json.Marshal(out)
	return b
}

// find returns the hash advertised for (epoch, step).
func (s stateAds) find(epoch, step uint64) (string, bool) {
	if s.Epoch != epoch {
		return "", false
	}
	for _, a := range s.Ads {
		if a.Step == step {
			return a.Hash, true
		}
	}
	return "", false
}

// past reports whether the advertiser has moved beyond (epoch, step)
// without a report of it: it will not report that step any more.
func (s stateAds) past(epoch, step uint64) bool {
	if s.Epoch != epoch || len(s.Ads) == 0 {
		return s.Epoch > epoch
	}
	return slices.ContainsFunc(s.Ads, func(a stateAd) bool { return a.Step > step })
}

// validStateHash: lowercase hex, minLen..maxLen characters.
func validStateHash(h string, minLen, maxLen int) bool {
	if len(h) < minLen || len(h) > maxLen {
		return false
	}
	for i := range len(h) {
		if c := h[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// decodeStateAds reads a peer's advertised reports (untrusted bytes): at
// most maxStateAds pairs [step, hash], each hash stateHashLen lowercase hex
// characters. Anything else yields none (false).
func decodeStateAds(epoch uint64, raw json.RawMessage) (stateAds, bool) {
	var items []json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &items) != nil || len(items) == 0 || len(items) > maxStateAds {
		return stateAds{}, false
	}
	out := stateAds{Epoch: epoch, Ads: make([]stateAd, 0, len(items))}
	for _, it := range items {
		var pair []json.RawMessage
		if json.Unmarshal(it, &pair) != nil || len(pair) != 2 {
			return stateAds{}, false
		}
		var a stateAd
		if json.Unmarshal(pair[0], &a.Step) != nil || json.Unmarshal(pair[1], &a.Hash) != nil ||
			!validStateHash(a.Hash, stateHashLen, stateHashLen) {
			return stateAds{}, false
		}
		out.Ads = append(out.Ads, a)
	}
	return out, true
}

// stateVerdict decides one comparison: own is this node's hash, seen the
// hashes other members reported for the same epoch and step. The
// majority's hash is the one most members hold; on a tie, the one held by
// the member that comes first in the agreed list's order (peer IDs
// compared as bytes, as lists are sorted) among those holding a tied hash.
func stateVerdict(self peer.ID, own string, seen map[peer.ID]string) (majority string, agree, reporting int) {
	count := map[string]int{own: 1}
	first := map[string]peer.ID{own: self}
	for id, h := range seen {
		count[h]++
		if f, ok := first[h]; !ok || id < f {
			first[h] = id
		}
	}
	for h, c := range count {
		if majority == "" || c > count[majority] || c == count[majority] && first[h] < first[majority] {
			majority = h
		}
	}
	return majority, count[own], 1 + len(seen)
}

// stateReport is one of the trainer's reports.
type stateReport struct {
	epoch, step uint64
	hash        string
	at          time.Time
	seen        map[peer.ID]string // the members' hashes for (epoch, step)
	decided     bool
	// stale: reported before the trainer re-synced; its verdict is not
	// the trainer's any more.
	stale bool
}

// stateCheck keeps the trainer's reports and decides them.
type stateCheck struct {
	self    peer.ID
	log     *slog.Logger
	metrics *metrics
	publish func(stateAds) // the advertised reports changed

	mu      sync.Mutex
	reports []*stateReport // oldest first
	last    *localapi.StateCheck
	// verdict is a diverged check the trainer has not re-synced since;
	// lastVerdict the last check another member reported the step of.
	verdict     *localapi.StateCheck
	lastVerdict *localapi.StateCheck
	checks      map[string]uint64
	resyncs     uint64
	// resyncing: the trainer joins to re-sync and has not reported since
	// (its join is asked again in slices: one re-sync).
	resyncing bool
}

func newStateCheck(self peer.ID, log *slog.Logger, m *metrics, publish func(stateAds)) *stateCheck {
	c := &stateCheck{self: self, log: log, metrics: m, publish: publish, checks: map[string]uint64{}}
	for _, r := range stateResults {
		c.checks[r] = 0
	}
	return c
}

// report takes the trainer's hash of its state at (epoch, step),
// advertises it and compares what can be compared; it returns the verdict
// the trainer must act on, else the last check decided.
func (c *stateCheck) report(epoch, step uint64, hash string, now time.Time, v mesh.View, list []peer.ID) *localapi.StateCheck {
	c.mu.Lock()
	c.reports = slices.DeleteFunc(c.reports, func(r *stateReport) bool {
		return !r.decided && r.epoch == epoch && r.step == step // reported again: the new hash counts
	})
	c.reports = append(c.reports, &stateReport{epoch: epoch, step: step, hash: hash, at: now, seen: map[peer.ID]string{}})
	c.resyncing = false
	for undecided := c.undecided(); undecided > maxStateReports; undecided-- {
		for _, r := range c.reports {
			if !r.decided {
				c.decide(r)
				break
			}
		}
	}
	// Keep the newest stateAdsKept reports and the undecided ones.
	keep := c.reports[:0]
	for i, r := range c.reports {
		if !r.decided || i >= len(c.reports)-stateAdsKept {
			keep = append(keep, r)
		}
	}
	clear(c.reports[len(keep):])
	c.reports = keep
	ads := c.adsLocked()
	c.evaluateLocked(now, v, list)
	out := c.answerLocked()
	c.mu.Unlock()
	if c.publish != nil {
		c.publish(ads)
	}
	return out
}

func (c *stateCheck) undecided() (n int) {
	for _, r := range c.reports {
		if !r.decided {
			n++
		}
	}
	return n
}

// adsLocked are the reports to advertise: the newest stateAdsKept of the
// newest report's epoch, newest first.
func (c *stateCheck) adsLocked() stateAds {
	if len(c.reports) == 0 {
		return stateAds{}
	}
	out := stateAds{Epoch: c.reports[len(c.reports)-1].epoch}
	for i := len(c.reports) - 1; i >= 0 && len(out.Ads) < stateAdsKept; i-- {
		if r := c.reports[i]; r.epoch == out.Epoch {
			out.Ads = append(out.Ads, stateAd{Step: r.step, Hash: r.hash})
		}
	}
	return out
}

// evaluate records the members' hashes that the view advertises and
// decides the comparisons that can be decided.
func (c *stateCheck) evaluate(now time.Time, v mesh.View, list []peer.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evaluateLocked(now, v, list)
}

func (c *stateCheck) evaluateLocked(now time.Time, v mesh.View, list []peer.ID) {
	if c.undecided() == 0 {
		return
	}
	// The live members of the list, what they advertise, and whether their
	// trainer trains (one that does not will not report).
	type peerState struct {
		ads      stateAds
		training bool
	}
	live := map[peer.ID]peerState{}
	for _, m := range v.Members {
		if m.ID == c.self || m.State != mesh.Alive || !slices.Contains(list, m.ID) {
			continue
		}
		var ps peerState
		if pl, ok := decodePayload(m.Payload); ok {
			ps.training = pl.State == rounds.StateTraining || pl.State == rounds.StateWaiting
			ps.ads, _ = decodeStateAds(pl.StateEpoch, pl.States)
		}
		live[m.ID] = ps
	}
	// Oldest first, and in order: a verdict never overtakes an older one.
	for _, r := range c.reports {
		if r.decided {
			continue
		}
		pending := false
		for id, ps := range live {
			if _, ok := r.seen[id]; ok {
				continue
			}
			if h, ok := ps.ads.find(r.epoch, r.step); ok {
				r.seen[id] = h
				continue
			}
			if ps.training && !ps.ads.past(r.epoch, r.step) {
				pending = true
			}
		}
		if pending && now.Sub(r.at) < stateCheckWait {
			return
		}
		c.decide(r)
	}
}

// decide ends the comparison of r with the hashes seen for it.
func (c *stateCheck) decide(r *stateReport) {
	r.decided = true
	maj, agree, reporting := stateVerdict(c.self, r.hash, r.seen)
	sc := &localapi.StateCheck{Epoch: r.epoch, Step: r.step, Hash: r.hash, Majority: maj, Agree: agree,
		Reporting: reporting, Diverged: maj != r.hash}
	result := stateAgree
	switch {
	case reporting < 2:
		result = stateUnchecked
		c.log.Debug("state check: no other member reported a state hash for the step", "epoch", r.epoch, "step", r.step)
	case sc.Diverged:
		result = stateDiverged
		c.log.Error("STATE DIVERGED: the trainer's model state differs from the mesh's majority; it must re-sync from the mesh",
			"epoch", r.epoch, "step", r.step, "agree", agree, "reporting", reporting, "hash", r.hash, "majority", maj,
			"stale", r.stale)
	case c.lastVerdict != nil && c.lastVerdict.Diverged:
		c.log.Info("state check: the trainer's state agrees with the mesh again", "step", r.step, "agree", agree, "reporting", reporting)
	case agree < reporting:
		var others []string
		for id, h := range r.seen {
			if h != r.hash {
				others = append(others, id.ShortString())
			}
		}
		slices.Sort(others)
		c.log.Warn("state check: members hold another model state than the majority; they must re-sync", "step", r.step,
			"agree", agree, "reporting", reporting, "diverged_members", others)
	default:
		c.log.Debug("state check: agree", "step", r.step, "agree", agree, "reporting", reporting)
	}
	c.checks[result]++
	c.last = sc
	if reporting >= 2 {
		c.lastVerdict = sc
		switch {
		case sc.Diverged && !r.stale:
			c.verdict = sc
		case !sc.Diverged:
			c.verdict = nil
		}
	}
	if c.metrics != nil {
		c.metrics.stateChecks.WithLabelValues(result).Inc()
		if reporting >= 2 {
			c.metrics.stateDiverged.Set(b2f(sc.Diverged))
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *stateCheck) answerLocked() *localapi.StateCheck {
	if c.verdict != nil {
		v := *c.verdict
		return &v
	}
	if c.last != nil {
		v := *c.last
		return &v
	}
	return nil
}

// pending is the diverged verdict the trainer has not acted on, if any.
func (c *stateCheck) pending() *localapi.StateCheck {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.verdict == nil {
		return nil
	}
	v := *c.verdict
	return &v
}

// resync: the trainer joins again to load the mesh's state. Its verdict
// is acted on, and the comparisons of its earlier reports, still open,
// are no longer its state's.
func (c *stateCheck) resync() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.resyncing && c.verdict == nil {
		return // the same re-sync's join, asked again
	}
	c.resyncing = true
	from := uint64(0)
	if c.verdict != nil {
		from = c.verdict.Step
	}
	c.log.Warn("trainer re-syncs its state from the mesh", "diverged_at", from)
	c.verdict = nil
	for _, r := range c.reports {
		r.stale = true
	}
	c.resyncs++
	if c.metrics != nil {
		c.metrics.stateResyncs.Inc()
	}
}

func (c *stateCheck) status() localapi.StateCheckStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := localapi.StateCheckStatus{Checks: map[string]uint64{}, Resyncs: c.resyncs}
	if c.last != nil {
		v := *c.last
		st.Last = &v
	}
	if c.lastVerdict != nil {
		v := *c.lastVerdict
		st.Verdict, st.Diverged = &v, v.Diverged
	}
	if n := len(c.reports); n > 0 {
		st.Reported = c.reports[n-1].step
	}
	for k, v := range c.checks {
		st.Checks[k] = v
	}
	return st
}

// run decides the comparisons as the members' reports arrive (every view
// the mesh hands over) and when their wait ends (a tick).
func (c *stateCheck) run(ctx context.Context, n *Node) error {
	views := n.mesh.Watch(ctx)
	t := time.NewTicker(stateCheckTick)
	defer t.Stop()
	v := n.mesh.View()
	for {
		select {
		case <-ctx.Done():
			return nil
		case nv, ok := <-views:
			if !ok {
				views = nil
				continue
			}
			v = nv
		case <-t.C:
		}
		c.evaluate(time.Now(), v, n.drv.Snapshot().List)
	}
}
