package node

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/localapi"
	"github.com/ringmesh/ringmesh/node/rounds"
)

const (
	hashA = "aaaaaaaaaaaaaaaa"
	hashB = "bbbbbbbbbbbbbbbb"
	hashC = "cccccccccccccccc"
)

func TestStateAdsRoundTrip(t *testing.T) {
	ads := stateAds{Epoch: 3, Ads: []stateAd{{Step: 40, Hash: hashA}, {Step: 30, Hash: hashB}}}
	b := encodePayloadStates(rounds.Info{State: rounds.StateTraining, Epoch: 3, Step: 41}, 0, 1, ads)
	p, ok := decodePayload(b)
	if !ok {
		t.Fatalf("payload %s not decoded", b)
	}
	got, ok := decodeStateAds(p.StateEpoch, p.States)
	if !ok || got.Epoch != 3 || len(got.Ads) != 2 || got.Ads[0] != ads.Ads[0] || got.Ads[1] != ads.Ads[1] {
		t.Fatalf("state ads: got %+v %v from %s", got, ok, b)
	}
	if h, ok := got.find(3, 30); !ok || h != hashB {
		t.Fatalf("find(3, 30) = %q %v", h, ok)
	}
	if _, ok := got.find(2, 30); ok {
		t.Fatal("found a report of another epoch")
	}
	if !got.past(3, 35) || got.past(3, 40) || !got.past(2, 99) || got.past(4, 1) {
		t.Fatal("past: wrong")
	}
	// A payload without reports has no "h" key at all.
	if b := encodePayload(rounds.Info{State: rounds.StateIdle}, 0, 0); bytes.Contains(b, []byte(`"h"`)) {
		t.Fatalf("payload without reports: %s", b)
	}
}

// TestStateAdsHostile: a peer's reports are untrusted bytes. Anything but
// a short list of [step, 16 lowercase hex] pairs is ignored, and the rest
// of its payload still counts.
func TestStateAdsHostile(t *testing.T) {
	long := "[" + strings.Repeat(`[1,"`+hashA+`"],`, maxStateAds) + `[1,"` + hashA + `"]]`
	for _, h := range []string{
		`null`, `{}`, `"x"`, `1`, `[]`, `[[]]`, `[[1]]`, `[[1,"` + hashA + `",3]]`,
		`[["1","` + hashA + `"]]`, `[[-1,"` + hashA + `"]]`, `[[1.5,"` + hashA + `"]]`, `[[1e3,"` + hashA + `"]]`,
		`[[18446744073709551616,"` + hashA + `"]]`, `[[1,null]]`, `[[1,1]]`, `[[1,"aaaa"]]`,
		`[[1,"` + strings.ToUpper(hashA) + `"]]`, `[[1,"` + hashA + `a"]]`, `[[1,"gggggggggggggggg"]]`,
		`[[1,"aaaaaaaaaaaaaaa\u0000"]]`, `[[1,"` + hashA + `"],{"a":1}]`, long,
	} {
		raw := []byte(`{"s":"training","e":2,"k":9,"he":2,"h":` + h + `}`)
		p, ok := decodePayload(raw)
		if !ok || p.State != rounds.StateTraining || p.Step != 9 {
			t.Errorf("payload with h=%s: the rest of it was dropped (%v)", h, ok)
			continue
		}
		if ads, ok := decodeStateAds(p.StateEpoch, p.States); ok || len(ads.Ads) != 0 {
			t.Errorf("h=%s decoded as %+v", h, ads)
		}
	}
	// A whole payload over the size bound is still refused.
	if _, ok := decodePayload([]byte(`{"s":"training","h":[[1,"` + strings.Repeat("a", maxPayload) + `"]]}`)); ok {
		t.Error("an oversized payload was decoded")
	}
}

func TestStateVerdictMajorityAndTies(t *testing.T) {
	a, b, c, d := peer.ID("a"), peer.ID("b"), peer.ID("c"), peer.ID("d")
	for _, tc := range []struct {
		name             string
		self             peer.ID
		own              string
		seen             map[peer.ID]string
		maj              string
		agree, reporting int
		diverged         bool
	}{
		{"alone", b, hashA, nil, hashA, 1, 1, false},
		{"all agree", b, hashA, map[peer.ID]string{a: hashA, c: hashA}, hashA, 3, 3, false},
		{"minority of one", c, hashB, map[peer.ID]string{a: hashA, b: hashA}, hashA, 1, 3, true},
		{"the majority's member", a, hashA, map[peer.ID]string{b: hashA, c: hashB}, hashA, 2, 3, false},
		{"tie of two, self first", a, hashB, map[peer.ID]string{b: hashA}, hashB, 1, 2, false},
		{"tie of two, self second", b, hashB, map[peer.ID]string{a: hashA}, hashA, 1, 2, true},
		{"tie 2-2: the first member's hash", c, hashB, map[peer.ID]string{a: hashA, b: hashB, d: hashA}, hashA, 2, 4, true},
		{"tie 2-2 won", b, hashB, map[peer.ID]string{a: hashB, c: hashA, d: hashA}, hashB, 2, 4, false},
		{"three ways", c, hashC, map[peer.ID]string{a: hashA, b: hashB}, hashA, 1, 3, true},
		{"plurality", d, hashC, map[peer.ID]string{a: hashA, b: hashB, c: hashB}, hashB, 1, 4, true},
	} {
		maj, agree, reporting := stateVerdict(tc.self, tc.own, tc.seen)
		if maj != tc.maj || agree != tc.agree || reporting != tc.reporting || (maj != tc.own) != tc.diverged {
			t.Errorf("%s: got majority %s, %d of %d; want %s, %d of %d (diverged %v)", tc.name, maj[:1], agree, reporting,
				tc.maj[:1], tc.agree, tc.reporting, tc.diverged)
		}
	}
}

// view is a mesh view of live peers advertising reports.
func stateView(self peer.ID, ads map[peer.ID]stateAds, state string) mesh.View {
	v := mesh.View{Self: self, Members: []mesh.Member{{ID: self, State: mesh.Alive}}}
	for id, a := range ads {
		v.Members = append(v.Members, mesh.Member{ID: id, State: mesh.Alive,
			Payload: encodePayloadStates(rounds.Info{State: state, Epoch: 1, Step: 50}, 0, 1, a)})
	}
	return v
}

func TestStateCheckDecides(t *testing.T) {
	a, b, c := peer.ID("a"), peer.ID("b"), peer.ID("c")
	list := []peer.ID{a, b, c}
	var logs bytes.Buffer
	m := newMetrics()
	var published []stateAds
	sc := newStateCheck(c, slog.New(slog.NewTextHandler(&logs, nil)), m, func(s stateAds) { published = append(published, s) })
	now := time.Unix(1000, 0)

	// c reports step 10; a reported it, b has not yet: no verdict yet.
	ads := map[peer.ID]stateAds{a: {Epoch: 1, Ads: []stateAd{{10, hashA}}}, b: {Epoch: 1, Ads: []stateAd{{5, hashA}}}}
	if got := sc.report(1, 10, hashB, now, stateView(c, ads, rounds.StateTraining), list); got != nil {
		t.Fatalf("verdict before b reported: %+v", got)
	}
	if len(published) != 1 || published[0].Epoch != 1 || len(published[0].Ads) != 1 || published[0].Ads[0] != (stateAd{10, hashB}) {
		t.Fatalf("published %+v", published)
	}
	// b reports it too: 2 of 3 hold another state. c diverged.
	ads[b] = stateAds{Epoch: 1, Ads: []stateAd{{10, hashA}, {5, hashA}}}
	sc.evaluate(now.Add(time.Second), stateView(c, ads, rounds.StateTraining), list)
	v := sc.pending()
	if v == nil || !v.Diverged || v.Step != 10 || v.Agree != 1 || v.Reporting != 3 || v.Majority != hashA {
		t.Fatalf("pending verdict %+v", v)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "STATE DIVERGED") {
		t.Fatalf("no error logged: %s", logs.String())
	}
	if got := gaugeValue(t, m, "ringmesh_state_diverged"); got != 1 {
		t.Fatalf("ringmesh_state_diverged %v", got)
	}
	st := sc.status()
	if !st.Diverged || st.Checks[stateDiverged] != 1 || st.Verdict == nil || st.Verdict.Step != 10 {
		t.Fatalf("status %+v", st)
	}
	if txt := stateCheckText(st); !strings.Contains(txt, "DIVERGED") || !strings.Contains(txt, "1 of 3") {
		t.Fatalf("status text: %s", txt)
	}
	b2, _ := json.Marshal(st)
	if !bytes.Contains(b2, []byte(`"diverged":true`)) {
		t.Fatalf("status json: %s", b2)
	}

	// The trainer re-syncs: the verdict is acted on. A comparison of a
	// report from before the resync that ends diverged is no verdict for
	// the trainer's new state.
	sc.report(1, 20, hashB, now.Add(2*time.Second), stateView(c, ads, rounds.StateTraining), list)
	sc.resync()
	if sc.pending() != nil {
		t.Fatal("a verdict is still pending after the resync")
	}
	ads[a] = stateAds{Epoch: 1, Ads: []stateAd{{20, hashA}}}
	ads[b] = stateAds{Epoch: 1, Ads: []stateAd{{20, hashA}}}
	sc.evaluate(now.Add(3*time.Second), stateView(c, ads, rounds.StateTraining), list)
	if p := sc.pending(); p != nil {
		t.Fatalf("the stale report's verdict is pending: %+v", p)
	}
	// After the resync the trainer holds the mesh's state: it agrees.
	got := sc.report(1, 30, hashA, now.Add(4*time.Second), stateView(c, ads, rounds.StateTraining), list)
	if got != nil && got.Step == 30 {
		t.Fatalf("decided before the others reported: %+v", got)
	}
	ads[a] = stateAds{Epoch: 1, Ads: []stateAd{{30, hashA}, {20, hashA}}}
	ads[b] = stateAds{Epoch: 1, Ads: []stateAd{{30, hashA}, {20, hashA}}}
	sc.evaluate(now.Add(5*time.Second), stateView(c, ads, rounds.StateTraining), list)
	st = sc.status()
	if st.Diverged || st.Verdict == nil || st.Verdict.Step != 30 || st.Verdict.Agree != 3 || st.Resyncs != 1 {
		t.Fatalf("status after the resync %+v", st)
	}
	if got := gaugeValue(t, m, "ringmesh_state_diverged"); got != 0 {
		t.Fatalf("ringmesh_state_diverged %v after agreeing", got)
	}
	if st.Checks[stateAgree] != 1 || st.Checks[stateDiverged] != 2 {
		t.Fatalf("checks %v", st.Checks)
	}
}

// TestStateCheckWaitsBounded: members that do not report the step are
// waited for at most stateCheckWait; members that do not train, moved past
// the step or are not live are not waited for.
func TestStateCheckWaitsBounded(t *testing.T) {
	a, b, c := peer.ID("a"), peer.ID("b"), peer.ID("c")
	list := []peer.ID{a, b, c}
	sc := newStateCheck(a, slog.New(slog.DiscardHandler), nil, nil)
	now := time.Unix(1000, 0)
	silent := map[peer.ID]stateAds{b: {}, c: {}}
	sc.report(1, 10, hashA, now, stateView(a, silent, rounds.StateTraining), list)
	sc.evaluate(now.Add(stateCheckWait-time.Millisecond), stateView(a, silent, rounds.StateTraining), list)
	if st := sc.status(); st.Last != nil {
		t.Fatalf("decided before the wait ended: %+v", st.Last)
	}
	sc.evaluate(now.Add(stateCheckWait), stateView(a, silent, rounds.StateTraining), list)
	if st := sc.status(); st.Last == nil || st.Last.Reporting != 1 || st.Checks[stateUnchecked] != 1 || st.Verdict != nil {
		t.Fatalf("after the wait: %+v", st)
	}
	// Idle peers, and one past the step, are not waited for.
	sc.report(1, 20, hashA, now, stateView(a, silent, rounds.StateIdle), list)
	if st := sc.status(); st.Last == nil || st.Last.Step != 20 {
		t.Fatalf("waited for idle peers: %+v", st.Last)
	}
	past := map[peer.ID]stateAds{b: {Epoch: 1, Ads: []stateAd{{40, hashB}}}, c: {Epoch: 2, Ads: []stateAd{{1, hashB}}}}
	sc.report(1, 30, hashA, now, stateView(a, past, rounds.StateTraining), list)
	if st := sc.status(); st.Last == nil || st.Last.Step != 30 || st.Last.Reporting != 1 {
		t.Fatalf("waited for peers past the step: %+v", st.Last)
	}
	// Peers outside the list do not count.
	out := map[peer.ID]stateAds{peer.ID("x"): {Epoch: 1, Ads: []stateAd{{50, hashB}}}, b: {Epoch: 1, Ads: []stateAd{{50, hashA}}}, c: {Epoch: 1, Ads: []stateAd{{50, hashA}}}}
	sc.report(1, 50, hashA, now, stateView(a, out, rounds.StateTraining), list)
	if st := sc.status(); st.Last == nil || st.Last.Step != 50 || st.Last.Reporting != 3 || st.Last.Agree != 3 {
		t.Fatalf("with a peer outside the list: %+v", st.Last)
	}
	// At most stateAdsKept reports are advertised; undecided ones are
	// bounded.
	for k := uint64(100); k < 100+2*maxStateReports; k++ {
		sc.report(1, k, hashA, now, stateView(a, silent, rounds.StateTraining), list)
	}
	sc.mu.Lock()
	n, ads := len(sc.reports), sc.adsLocked()
	sc.mu.Unlock()
	if n > maxStateReports+stateAdsKept || len(ads.Ads) != stateAdsKept || ads.Ads[0].Step != 100+2*maxStateReports-1 {
		t.Fatalf("%d reports kept, ads %+v", n, ads)
	}
	if len(encodePayloadStates(rounds.Info{State: rounds.StateTraining, Epoch: 1 << 62, Step: 1 << 62, List: strings.Repeat("f", 16)},
		1e11, maxLocalRanks, stateAds{Epoch: 1 << 62, Ads: []stateAd{{1 << 63, hashA}, {1 << 63, hashA}, {1 << 63, hashA}, {1 << 63, hashA}}})) > maxPayload {
		t.Fatal("the largest payload with reports exceeds maxPayload")
	}
}

func TestStateHashValid(t *testing.T) {
	for h, want := range map[string]bool{
		hashA: true, strings.Repeat("0", 64): true, "0123456789abcdef": true,
		"": false, "abc": false, strings.Repeat("a", 65): false, "0123456789ABCDEF": false, "0123456789abcdeg": false,
	} {
		if validStateHash(h, localapi.MinStateHash, localapi.MaxStateHash) != want {
			t.Errorf("validStateHash(%q) != %v", h, want)
		}
	}
}

func gaugeValue(t *testing.T, m *metrics, name string) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestStateCheckResyncOnce: a trainer's join to re-sync comes in slices
// (the client asks again on each timeout): one re-sync.
func TestStateCheckResyncOnce(t *testing.T) {
	sc := newStateCheck(peer.ID("a"), slog.New(slog.DiscardHandler), newMetrics(), nil)
	sc.resync()
	sc.resync()
	if st := sc.status(); st.Resyncs != 1 {
		t.Fatalf("%d re-syncs counted for one", st.Resyncs)
	}
	sc.report(1, 10, hashA, time.Unix(1000, 0), mesh.View{}, nil)
	sc.resync()
	if st := sc.status(); st.Resyncs != 2 {
		t.Fatalf("%d re-syncs counted for two", st.Resyncs)
	}
}
