package apiserver_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/internal/systest"
	"github.com/ringmesh/ringmesh/node/apiserver"
	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// fakeBackend answers every op at once and records what the server asked.
type fakeBackend struct {
	mu    sync.Mutex
	ranks int
	left  []string
	parts []apiserver.Part
	ready []int
}

func (b *fakeBackend) Membership() apiserver.Membership {
	return apiserver.Membership{Mesh: "m", Self: "self", State: "training", NextStep: 3, Members: []string{"self", "other"}}
}

func (b *fakeBackend) Status() localapi.Status {
	return localapi.Status{Mesh: "m", Self: localapi.SelfStatus{ID: "self"}}
}

func (b *fakeBackend) SetLocalRanks(n int) { b.mu.Lock(); b.ranks = n; b.mu.Unlock() }

func (b *fakeBackend) Join(context.Context, apiserver.Join) localapi.Response {
	return localapi.Response{Step: 3, NextStep: 3}
}

func (b *fakeBackend) Leave(reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.left = append(b.left, reason)
}

func (b *fakeBackend) Submit(step uint64, data []float32, _ allreduce.Options, parts []apiserver.Part) (apiserver.Pending, localapi.Response) {
	if step != 3 {
		return nil, localapi.Response{Code: localapi.CodeStepMismatch, Error: "step", NextStep: 3}
	}
	b.mu.Lock()
	b.parts = parts
	b.mu.Unlock()
	return fakePending{b, step, len(data)}, localapi.Response{}
}

func (b *fakeBackend) StateHash(step uint64, _ string) localapi.Response {
	return localapi.Response{Step: step}
}

func (b *fakeBackend) CheckpointSave(context.Context, string, uint64) localapi.Response {
	return localapi.Response{}
}

func (b *fakeBackend) CheckpointList(bool) localapi.Response { return localapi.Response{} }

func (b *fakeBackend) CheckpointFetch(context.Context, apiserver.Fetch) localapi.Response {
	return localapi.Response{}
}

func (b *fakeBackend) Trained(localapi.TrainingStatus) {}

func (b *fakeBackend) Reform() localapi.Response { return localapi.Response{} }

type fakePending struct {
	b    *fakeBackend
	step uint64
	n    int
}

func (p fakePending) PartReady(i int) error {
	p.b.mu.Lock()
	defer p.b.mu.Unlock()
	if i < 0 || i >= len(p.b.parts) {
		return errors.New("no such part")
	}
	p.b.ready = append(p.b.ready, i)
	return nil
}

func (p fakePending) Wait() localapi.Response {
	return localapi.Response{Step: p.step, NextStep: p.step + 1, MemberCount: p.n, Members: []string{"self", "other"}}
}

func serve(t *testing.T) (*fakeBackend, string) {
	t.Helper()
	dir := t.TempDir()
	b := &fakeBackend{}
	s, err := apiserver.Listen(dir, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		s.Close()
	})
	return b, dir
}

func dial(t *testing.T, dir string) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestServerAnswersOverBackend(t *testing.T) {
	_, dir := serve(t)
	c := dial(t, dir)
	if h := c.Hello; h.Mesh != "m" || h.Self != "self" || h.MemberCount != 2 || h.NextStep != 3 {
		t.Errorf("hello %+v", h)
	}
	ctx := context.Background()
	m, err := c.Membership(ctx)
	if err != nil || len(m.Members) != 2 || m.Mesh != "" {
		t.Errorf("membership %+v, %v", m, err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Mesh != "m" || st.Self.ID != "self" {
		t.Errorf("status %+v, %v", st, err)
	}
	_, err = c.Call(ctx, localapi.Request{Op: "no_such_op"})
	if !client.IsCode(err, localapi.CodeBadRequest) || !strings.Contains(err.Error(), `unknown op "no_such_op"`) {
		t.Errorf("unknown op: %v", err)
	}
	if _, err := listen(dir); err == nil || !strings.Contains(err.Error(), "another node is running") {
		t.Errorf("second server on the data dir: %v", err)
	}
}

func listen(dir string) (*apiserver.Server, error) {
	return apiserver.Listen(dir, &fakeBackend{}, nil)
}

func TestServerOneTrainer(t *testing.T) {
	b, dir := serve(t)
	ctx := context.Background()
	a, other := dial(t, dir), dial(t, dir)
	buf, err := other.NewBuffer(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := buf.AllReduce(ctx, 3, client.ReduceOptions{}); !client.IsCode(err, localapi.CodeNotMember) {
		t.Errorf("all-reduce before any join: %v", err)
	}
	if _, err := a.Call(ctx, localapi.Request{Op: localapi.OpJoin, LocalRanks: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Call(ctx, localapi.Request{Op: localapi.OpJoin}); !client.IsCode(err, localapi.CodeBusy) || !strings.Contains(err.Error(), "a trainer (pid") {
		t.Errorf("second trainer's join: %v", err)
	}
	if _, err := buf.AllReduce(ctx, 3, client.ReduceOptions{}); !client.IsCode(err, localapi.CodeBusy) {
		t.Errorf("all-reduce of another connection: %v", err)
	}
	if _, err := a.Call(ctx, localapi.Request{Op: localapi.OpJoin, LocalRanks: localapi.MaxLocalRanks + 1}); !client.IsCode(err, localapi.CodeBadRequest) {
		t.Errorf("join with too many local ranks: %v", err)
	}
	b.mu.Lock()
	ranks := b.ranks
	b.mu.Unlock()
	if ranks != 4 {
		t.Errorf("local ranks %d, want 4", ranks)
	}
	a.Close()
	systest.Eventually(t, 5*time.Second, func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.ranks != 0 || len(b.left) != 1 || b.left[0] != "trainer disconnected" {
			return fmt.Errorf("after the trainer disconnected: ranks %d, left %q", b.ranks, b.left)
		}
		return nil
	})
	if _, err := other.Call(ctx, localapi.Request{Op: localapi.OpJoin}); err != nil {
		t.Errorf("join once the trainer is gone: %v", err)
	}
	if err := other.Leave(ctx); err != nil {
		t.Errorf("leave: %v", err)
	}
	if err := other.Leave(ctx); !client.IsCode(err, localapi.CodeNotMember) {
		t.Errorf("leave again: %v", err)
	}
}

func TestServerAllReduceInParts(t *testing.T) {
	b, dir := serve(t)
	ctx := context.Background()
	c := dial(t, dir)
	buf, err := c.NewBuffer(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, localapi.Request{Op: localapi.OpJoin}); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Status(ctx); err != nil || st.Training.Mode != "" {
		t.Errorf("status before a round: training %+v, %v; want no mode", st.Training, err)
	}
	resp, err := buf.AllReduce(ctx, 3, client.ReduceOptions{Wire: "int8", SyncEvery: 50})
	if err != nil || resp.Step != 3 || resp.NextStep != 4 || resp.MemberCount != 100 {
		t.Errorf("all-reduce: %+v, %v", resp, err)
	}
	// The applied round's mode shows in status: 100 int8 elements are two
	// blocks (100 bytes and two 4-byte scales).
	want := localapi.TrainingStatus{Mode: "diloco", SyncEvery: 50, Wire: "int8", Step: 3, Members: len(resp.Members),
		WireBytes: 108, SentBytes: 2 * int64(len(resp.Members)-1) * 108 / int64(len(resp.Members))}
	if st, err := c.Status(ctx); err != nil || st.Training != want {
		t.Errorf("status after a DiLoCo round: training %+v, %v; want %+v", st.Training, err, want)
	}
	var ae *client.APIError
	if _, err := buf.AllReduce(ctx, 5, client.ReduceOptions{}); !errors.As(err, &ae) || ae.Code != localapi.CodeStepMismatch || ae.NextStep != 3 {
		t.Errorf("refused submit: %v", err)
	}
	for _, bad := range []client.ReduceOptions{{Wire: "int4"}, {Reduce: "median"}, {Reduce: "wmean", Weight: -1}} {
		if _, err := buf.AllReduce(ctx, 3, bad); !client.IsCode(err, localapi.CodeBadRequest) {
			t.Errorf("options %+v: %v", bad, err)
		}
	}
	if err := buf.AllReduceParts(ctx, 3, client.ReduceOptions{}, [][2]int64{{0, 50}, {49, 51}}); !client.IsCode(err, localapi.CodeBadRequest) {
		t.Errorf("overlapping parts: %v", err)
	}
	if err := buf.AllReduceParts(ctx, 3, client.ReduceOptions{}, [][2]int64{{50, 50}, {0, 50}}); err != nil {
		t.Fatal(err)
	}
	if _, err := buf.AllReduce(ctx, 3, client.ReduceOptions{}); !client.IsCode(err, localapi.CodeBusy) {
		t.Errorf("all-reduce while one in parts is pending: %v", err)
	}
	if err := buf.Close(); !client.IsCode(err, localapi.CodeBusy) {
		t.Errorf("unregister the pending buffer: %v", err)
	}
	if err := buf.PartReady(ctx, 3, 2); !client.IsCode(err, localapi.CodeBadRequest) {
		t.Errorf("part 2 of 2: %v", err)
	}
	if err := buf.PartReady(ctx, 4, 0); !client.IsCode(err, localapi.CodeNotFound) {
		t.Errorf("part of a step not pending: %v", err)
	}
	for i := range 2 {
		if err := buf.PartReady(ctx, 3, i); err != nil {
			t.Fatal(err)
		}
	}
	resp, err = buf.Wait(ctx, 3)
	if err != nil || resp.Step != 3 {
		t.Errorf("wait: %+v, %v", resp, err)
	}
	b.mu.Lock()
	parts, ready := b.parts, b.ready
	b.mu.Unlock()
	if want := []apiserver.Part{{50, 50}, {0, 50}}; fmt.Sprint(parts) != fmt.Sprint(want) || fmt.Sprint(ready) != "[0 1]" {
		t.Errorf("backend got parts %v, ready %v; want %v, [0 1]", parts, ready, want)
	}
	if _, err := buf.Wait(ctx, 3); !client.IsCode(err, localapi.CodeNotFound) {
		t.Errorf("wait again: %v", err)
	}
}
