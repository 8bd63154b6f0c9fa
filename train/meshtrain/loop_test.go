package meshtrain

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
	"github.com/ringmesh/ringmesh/train"
)

// fakeMesh is an in-memory mesh of members that all-reduce with weighted
// mean in float64, as the node does, and hand out scripted errors.
type fakeMesh struct {
	mu           sync.Mutex
	cond         *sync.Cond
	members      []string
	step         uint64
	sum          []float64
	weight       float64
	in           map[string]bool
	result       []float32
	resultWeight float64
	gen          int
	// fail[member][step] is an error code answered once to that member's
	// all-reduce of that step, before it contributes.
	fail map[string]map[uint64]string
	// joinAt, when set, is the step a join answers, with checkpoint ckpt.
	joinAt *uint64
	ckpt   *localapi.CheckpointInfo
	saves  map[string][]uint64 // member -> steps saved
	// unavailable joins that ask for a checkpoint are answered
	// "unavailable"; dests records each join's dest.
	unavailable int
	dests       []string
}

func newFakeMesh(members ...string) *fakeMesh {
	m := &fakeMesh{members: members, in: map[string]bool{}, fail: map[string]map[uint64]string{}, saves: map[string][]uint64{}}
	m.cond = sync.NewCond(&m.mu)
	return m
}

type fakeConn struct {
	m    *fakeMesh
	self string
}

func (c *fakeConn) Self() string { return c.self }
func (c *fakeConn) Close() error { return nil }

func (c *fakeConn) Leave(context.Context) error { return nil }

func (c *fakeConn) Join(ctx context.Context, start uint64, dest string) (localapi.Response, error) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	c.m.dests = append(c.m.dests, dest)
	if dest != "" && c.m.unavailable > 0 {
		c.m.unavailable--
		return localapi.Response{}, &client.APIError{Op: "join", Code: localapi.CodeUnavailable, Msg: "no checkpoint"}
	}
	step := c.m.step
	if c.m.joinAt != nil {
		step = *c.m.joinAt
	}
	return localapi.Response{OK: true, Step: step, NextStep: step, Members: c.m.members, Checkpoint: c.m.ckpt}, nil
}

func (c *fakeConn) Membership(context.Context) (localapi.Response, error) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	return localapi.Response{OK: true, Members: c.m.members}, nil
}

func (c *fakeConn) SaveCheckpoint(_ context.Context, path string, step uint64) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	info, err := train.ReadStateInfo(b)
	if err != nil {
		return err
	}
	if info.Step != step {
		return &client.APIError{Op: "checkpoint_save", Code: localapi.CodeBadRequest, Msg: "step differs from the state's"}
	}
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	c.m.saves[c.self] = append(c.m.saves[c.self], step)
	return nil
}

func (c *fakeConn) AllReduce(ctx context.Context, step uint64, data []float32, opt client.ReduceOptions) (localapi.Response, error) {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if code := m.fail[c.self][step]; code != "" {
		delete(m.fail[c.self], step)
		return localapi.Response{}, &client.APIError{Op: "allreduce", Code: code, Msg: "scripted"}
	}
	if step != m.step || opt.Reduce != "wmean" {
		return localapi.Response{}, &client.APIError{Op: "allreduce", Code: localapi.CodeBadRequest, Msg: "unexpected step or op"}
	}
	if m.sum == nil {
		m.sum = make([]float64, len(data))
	}
	for i, v := range data {
		m.sum[i] += opt.Weight * float64(v)
	}
	m.weight += opt.Weight
	m.in[c.self] = true
	gen := m.gen
	if len(m.in) == len(m.members) {
		m.result = make([]float32, len(data))
		for i, s := range m.sum {
			m.result[i] = float32(s / m.weight)
		}
		m.resultWeight = m.weight
		m.sum, m.weight = nil, 0
		clear(m.in)
		m.gen++
		m.step++
		m.cond.Broadcast()
	}
	for m.gen == gen {
		m.cond.Wait()
	}
	copy(data, m.result)
	resp := localapi.Response{OK: true, Step: step, NextStep: step + 1, Members: m.members,
		TotalWeight: m.resultWeight, Attempts: 1}
	return resp, nil
}

func testConfig(t *testing.T) Config {
	cfg := LocalConfig()
	cfg.DataDir = t.TempDir()
	cfg.Steps = 30
	cfg.GlobalBatch = 29
	cfg.CheckpointEvery = 10
	cfg.JoinTimeout = 10 * time.Second
	return cfg
}

// reference trains one worker with the whole batch for steps steps.
func reference(t *testing.T, cfg Config, steps uint64) *train.Trainer {
	t.Helper()
	tr, err := train.New(cfg.Train)
	if err != nil {
		t.Fatal(err)
	}
	for tr.Step() < steps {
		if _, err := tr.TrainStep(cfg.GlobalBatch); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

// runLoop runs one loop over c; safe on any goroutine.
func runLoop(ctx context.Context, cfg Config, c conn) (Result, error) {
	tr, err := cfg.newTrainer()
	if err != nil {
		return Result{}, err
	}
	return newLoop(cfg, tr, c).run(ctx)
}

// runFakeMesh runs one loop per name over m, each with cfg, its own
// checkpoint dir and onStep as OnStep, and fails the test when any loop
// fails; it returns the results by name.
func runFakeMesh(ctx context.Context, t *testing.T, m *fakeMesh, names []string, cfg Config,
	onStep func(i int, name string, s StepInfo)) []Result {
	t.Helper()
	results := make([]Result, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		c := cfg
		c.CheckpointDir = filepath.Join(cfg.DataDir, name)
		c.OnStep = func(s StepInfo) { onStep(i, name, s) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = runLoop(ctx, c, &fakeConn{m: m, self: name})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", names[i], err)
		}
	}
	return results
}

func maxDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = max(d, float64(a[i]-b[i]), float64(b[i]-a[i]))
	}
	return d
}

func TestLoopMatchesOneWorker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names := []string{"a", "b", "c"}
	m := newFakeMesh(names...)
	cfg := testConfig(t)
	var losses sync.Map
	results := runFakeMesh(ctx, t, m, names, cfg, func(i int, name string, s StepInfo) {
		if s.Rank != i || s.TotalWeight != float64(cfg.GlobalBatch) || !s.Synced {
			t.Errorf("%s step %d: rank %d weight %v synced %v, want rank %d weight %d synced", name, s.Step, s.Rank, s.TotalWeight, s.Synced, i, cfg.GlobalBatch)
		}
		if prev, ok := losses.LoadOrStore(s.Step, s.Loss); ok && prev.(float32) != s.Loss {
			t.Errorf("%s step %d: global loss %v, another member %v", name, s.Step, s.Loss, prev)
		}
	})
	ref := reference(t, cfg, cfg.Steps)
	for i, r := range results {
		if r.Applied != int(cfg.Steps) || r.Joins != 1 || !r.Synced || r.Trainer.Step() != cfg.Steps {
			t.Errorf("%s: %+v at step %d, want %d steps applied, 1 join, synced", names[i], r, r.Trainer.Step(), cfg.Steps)
		}
		if r.Trainer.ParamHash() != results[0].Trainer.ParamHash() {
			t.Errorf("%s: params differ from %s's", names[i], names[0])
		}
		if d := maxDiff(r.Trainer.Params(), ref.Params()); d > 1e-5 {
			t.Errorf("%s: max |param - one worker's| = %g, want <= 1e-5", names[i], d)
		}
		if got, want := m.saves[names[i]], []uint64{10, 20, 30}; !slices.Equal(got, want) {
			t.Errorf("%s saved steps %v, want %v", names[i], got, want)
		}
	}
	files, _ := filepath.Glob(filepath.Join(cfg.DataDir, "a", "state-*"))
	if len(files) != keepFiles {
		t.Errorf("%d state files left, want %d: %v", len(files), keepFiles, files)
	}
}

// TestLoopRejoinLoadsCheckpoint: a member answered "excluded" joins again,
// gets a later entry step with the checkpoint of that step, loads it and
// ends where one worker does.
func TestLoopRejoinLoadsCheckpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := testConfig(t)
	cfg.CheckpointEvery = 0
	ref := reference(t, cfg, 17)
	path := filepath.Join(t.TempDir(), "ck")
	if err := os.WriteFile(path, ref.MarshalState(), 0o600); err != nil {
		t.Fatal(err)
	}
	m := newFakeMesh("solo")
	m.fail["solo"] = map[uint64]string{5: localapi.CodeExcluded}
	var joins []JoinInfo
	cfg.OnJoin = func(j JoinInfo) { joins = append(joins, j) }
	cfg.OnStep = func(s StepInfo) {
		if s.Step == 4 { // step 5 is answered "excluded" and the mesh goes on to 17
			m.mu.Lock()
			at := uint64(17)
			m.step, m.joinAt = at, &at
			m.ckpt = &localapi.CheckpointInfo{Step: at, Path: path}
			m.mu.Unlock()
		}
	}
	r, err := runLoop(ctx, cfg, &fakeConn{m: m, self: "solo"})
	if err != nil {
		t.Fatal(err)
	}
	if len(joins) != 2 || joins[1].Step != 17 || joins[1].Checkpoint != 17 || !joins[1].Synced || joins[1].Reason != localapi.CodeExcluded {
		t.Fatalf("joins %+v, want a second join at 17 that loaded checkpoint 17 (synced, reason excluded)", joins)
	}
	if r.Applied != 5+int(cfg.Steps-17) || !r.Synced {
		t.Errorf("result %+v, want %d applied and synced", r, 5+int(cfg.Steps-17))
	}
	want := reference(t, cfg, cfg.Steps)
	if d := maxDiff(r.Trainer.Params(), want.Params()); d > 1e-5 {
		t.Errorf("max |param - one worker's| = %g after a rejoin from a checkpoint", d)
	}
}

// TestLoopRejoinWithoutCheckpointIsUnsynced: with no checkpoint for the
// entry step the trainer goes on, unsynced, and never saves.
func TestLoopRejoinWithoutCheckpointIsUnsynced(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := testConfig(t)
	m := newFakeMesh("solo")
	m.fail["solo"] = map[uint64]string{3: localapi.CodeWaiting}
	unsynced := 0
	cfg.OnStep = func(s StepInfo) {
		if s.Step == 2 { // step 3 is answered "waiting" and the mesh goes on to 12
			m.mu.Lock()
			m.step = 12
			m.mu.Unlock()
		}
		if !s.Synced {
			unsynced++
			if s.Saved {
				t.Errorf("step %d: an unsynced trainer saved a checkpoint", s.Step)
			}
		}
	}
	r, err := runLoop(ctx, cfg, &fakeConn{m: m, self: "solo"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Synced || unsynced != int(cfg.Steps-12) || r.Joins != 2 {
		t.Errorf("result %+v with %d unsynced steps, want unsynced, %d unsynced steps, 2 joins", r, unsynced, cfg.Steps-12)
	}
	if got := m.saves["solo"]; len(got) != 0 {
		t.Errorf("saved %v, want nothing (steps 10, 20, 30 were run unsynced)", got)
	}
}

func TestLoopStopsOnOtherErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := testConfig(t)
	m := newFakeMesh("solo")
	m.fail["solo"] = map[uint64]string{4: localapi.CodeInternal}
	r, err := runLoop(ctx, cfg, &fakeConn{m: m, self: "solo"})
	if !client.IsCode(err, localapi.CodeInternal) || r.Applied != 4 {
		t.Errorf("got %d applied, err %v; want 4 applied and the internal error", r.Applied, err)
	}
}

func TestNextListOrdersByRawID(t *testing.T) {
	var ids []peer.ID
	for range 12 {
		_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		id, err := peer.IDFromPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b peer.ID) int { return strings.Compare(string(a), string(b)) })
	want := make([]string, len(ids))
	for i, id := range ids {
		want[i] = id.String()
	}
	ring := []string{want[0], want[3], want[4], want[9]}
	joiners := []string{want[11], want[1], want[7]}
	got := nextList(ring, joiners)
	wantList := []string{want[0], want[1], want[3], want[4], want[7], want[9], want[11]}
	if !slices.Equal(got, wantList) {
		t.Errorf("nextList = %v, want %v", got, wantList)
	}
	if got := nextList(ring, nil); !slices.Equal(got, ring) {
		t.Errorf("nextList without joiners = %v, want the ring %v", got, ring)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := LocalConfig()
	ok.DataDir, ok.Steps = "/x", 1
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"no dir":     func(c *Config) { c.DataDir = "" },
		"no steps":   func(c *Config) { c.Steps = 0 },
		"batch 0":    func(c *Config) { c.GlobalBatch = 0 },
		"wire":       func(c *Config) { c.Wire = "nope" },
		"outer lr":   func(c *Config) { c.SyncEvery, c.OuterLR = 4, 0 },
		"outer mom":  func(c *Config) { c.SyncEvery, c.OuterMomentum = 4, 1 },
		"join 0":     func(c *Config) { c.JoinTimeout = 0 },
		"train conf": func(c *Config) { c.Train.LR = 0 },
	} {
		c := ok
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want an error", name)
		}
	}
}

// TestLoopJoinWithoutCheckpointAfterUnavailable: joins answered
// "unavailable" are retried, and after maxUnavailable of them the loop joins
// without asking for a checkpoint.
func TestLoopJoinWithoutCheckpointAfterUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := testConfig(t)
	cfg.Steps = 3
	m := newFakeMesh("solo")
	m.unavailable = 100
	r, err := runLoop(ctx, cfg, &fakeConn{m: m, self: "solo"})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.dests) != maxUnavailable+1 || m.dests[maxUnavailable] != "" || !strings.HasSuffix(m.dests[0], "join-state.rmts") ||
		!filepath.IsAbs(m.dests[0]) {
		t.Errorf("join dests %q: want %d absolute .../join-state.rmts, then one without", m.dests, maxUnavailable)
	}
	if r.Applied != 3 || !r.Synced {
		t.Errorf("result %+v, want 3 applied, synced (fresh mesh at step 0)", r)
	}
}
