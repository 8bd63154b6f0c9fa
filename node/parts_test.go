package node_test

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/node"
	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// joinedMesh starts n nodes (trainer timeout tt) whose trainers joined at
// step 0, each with a buffer of elems elements.
func joinedMesh(t *testing.T, n, elems int, tt time.Duration) ([]*testNode, []*client.Buffer) {
	t.Helper()
	return joinedMeshConfig(t, n, elems, func(c *node.Config) { c.TrainerTimeout = tt })
}

// joinedMeshConfig is joinedMesh with each node's LocalConfig changed by
// set.
func joinedMeshConfig(t *testing.T, n, elems int, set func(*node.Config)) ([]*testNode, []*client.Buffer) {
	t.Helper()
	start := func(join ...string) *testNode {
		cfg := node.LocalConfig()
		cfg.DataDir, cfg.MinMembers, cfg.Mesh.Join = t.TempDir(), n, join
		set(&cfg)
		return startNodeConfig(t, cfg)
	}
	ns := []*testNode{start()}
	for range n - 1 {
		ns = append(ns, start(ns[0].addr()))
	}
	ctx := ctxT(t, 2*time.Minute)
	bufs := make([]*client.Buffer, n)
	errs := make(chan error, n)
	for i, tn := range ns {
		c := dial(t, tn.dir)
		b, err := c.NewBuffer(ctx, elems)
		if err != nil {
			t.Fatal(err)
		}
		bufs[i] = b
		go func() { _, err := c.Join(ctx, 0); errs <- err }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	return ns, bufs
}

// TestAllReduceInParts: trainers submit a step in parts before computing
// them, write and mark each part as they go (in other orders than the
// parts are reduced in), and every member gets the weighted mean of every
// element, bit-identical, from one applied round.
func TestAllReduceInParts(t *testing.T) {
	const n, elems = 3, 1000
	ns, bufs := joinedMesh(t, n, elems, time.Minute)
	ctx := ctxT(t, 2*time.Minute)
	// Reduced last part first, as backward produces a model's gradients.
	parts := [][2]int64{{700, 300}, {200, 500}, {0, 200}}
	markOrder := [][]int{{0, 1, 2}, {2, 0, 1}, {1, 2, 0}}
	value := func(i, j int) float32 { return float32(i+1) + float32(j)/1000 }
	opt := client.ReduceOptions{Reduce: "wmean"}
	errs := make(chan error, n)
	resps := make([]localapi.Response, n)
	for i, b := range bufs {
		go func() {
			o := opt
			o.Weight = float64(i + 1)
			if err := b.AllReduceParts(ctx, 0, o, parts); err != nil {
				errs <- fmt.Errorf("member %d: submit: %w", i, err)
				return
			}
			for _, k := range markOrder[i] {
				time.Sleep(20 * time.Millisecond) // computing part k
				p := parts[k]
				for j := p[0]; j < p[0]+p[1]; j++ {
					b.Data[j] = value(i, int(j))
				}
				if err := b.PartReady(ctx, 0, k); err != nil {
					errs <- fmt.Errorf("member %d: part %d: %w", i, k, err)
					return
				}
			}
			var err error
			resps[i], err = b.Wait(ctx, 0)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for j := range elems {
		var want float64
		for i := range n {
			want += float64(i+1) * float64(value(i, j))
		}
		want /= 6
		if math.Abs(float64(bufs[0].Data[j])-want) > 1e-5 {
			t.Fatalf("element %d: %v, want %v", j, bufs[0].Data[j], want)
		}
		for i := 1; i < n; i++ {
			if bufs[i].Data[j] != bufs[0].Data[j] {
				t.Fatalf("element %d: member %d has %v, member 0 %v", j, i, bufs[i].Data[j], bufs[0].Data[j])
			}
		}
	}
	for i, r := range resps {
		if r.Step != 0 || r.NextStep != 1 || r.TotalWeight != 6 || r.MemberCount != n {
			t.Errorf("member %d: %+v", i, r)
		}
	}
	if got := ns[0].Status().Rounds.Applied; got != 1 {
		t.Errorf("rounds applied: %d, want 1 (one round for all parts)", got)
	}
}

// TestAllReduceInPartsBadCalls: parts that do not tile the buffer, marks
// and waits without a pending call, a second submit and unregistering the
// pending buffer are refused with a clear code, and the pending call still
// completes.
func TestAllReduceInPartsBadCalls(t *testing.T) {
	_, bufs := joinedMesh(t, 1, 100, time.Minute)
	b := bufs[0]
	ctx := ctxT(t, time.Minute)
	for _, parts := range [][][2]int64{{{0, 50}}, {{0, 60}, {50, 50}}, {{0, 50}, {50, 0}, {50, 50}}, {{-1, 101}}, {{0, 101}}} {
		wantCode(t, fmt.Sprintf("parts %v", parts), b.AllReduceParts(ctx, 0, client.ReduceOptions{}, parts), localapi.CodeBadRequest)
	}
	wantCode(t, "part_ready with nothing pending", b.PartReady(ctx, 0, 0), localapi.CodeNotFound)
	_, err := b.Wait(ctx, 0)
	wantCode(t, "wait with nothing pending", err, localapi.CodeNotFound)
	if err := b.AllReduceParts(ctx, 0, client.ReduceOptions{}, [][2]int64{{50, 50}, {0, 50}}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "a second submit", b.AllReduceParts(ctx, 0, client.ReduceOptions{}, [][2]int64{{0, 100}}), localapi.CodeBusy)
	_, err = b.AllReduce(ctx, 0, client.ReduceOptions{})
	wantCode(t, "a plain all-reduce while one in parts is pending", err, localapi.CodeBusy)
	wantCode(t, "part 2 of 2", b.PartReady(ctx, 0, 2), localapi.CodeBadRequest)
	wantCode(t, "part_ready of another step", b.PartReady(ctx, 1, 0), localapi.CodeNotFound)
	err = b.Close()
	wantCode(t, "unregistering the pending buffer", err, localapi.CodeBusy)
	for k := range 2 {
		if err := b.PartReady(ctx, 0, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.PartReady(ctx, 0, 1); err != nil {
		t.Fatalf("marking a part twice: %v", err)
	}
	if r, err := b.Wait(ctx, 0); err != nil || r.NextStep != 1 {
		t.Fatalf("wait: %+v, %v", r, err)
	}
}

// TestAllReduceInPartsMismatch: members that cut the step into different
// parts are told settings_mismatch (no retry mends it), not left waiting.
func TestAllReduceInPartsMismatch(t *testing.T) {
	t.Run("parts", func(t *testing.T) {
		partsMismatch(t, [][][2]int64{{{50, 50}, {0, 50}}, {{0, 100}}}, "count")
	})
	// Same count and sizes, cut at other offsets (issue 26 defect 5:
	// both applied the step, with elements mixed up).
	t.Run("offsets", func(t *testing.T) {
		partsMismatch(t, [][][2]int64{{{0, 50}, {50, 50}}, {{50, 50}, {0, 50}}}, "part_offset")
	})
}

func partsMismatch(t *testing.T, layouts [][][2]int64, field string) {
	_, bufs := joinedMesh(t, 2, 100, time.Minute)
	ctx := ctxT(t, 2*time.Minute)
	errs := make(chan error, 2)
	for i, b := range bufs {
		go func() {
			if err := b.AllReduceParts(ctx, 0, client.ReduceOptions{}, layouts[i]); err != nil {
				errs <- err
				return
			}
			for k := range layouts[i] {
				if err := b.PartReady(ctx, 0, k); err != nil {
					errs <- err
					return
				}
			}
			_, err := b.Wait(ctx, 0)
			errs <- err
		}()
	}
	for range 2 {
		err := <-errs
		wantCode(t, "parts that differ between members", err, localapi.CodeSettingsMismatch)
		if err != nil && !strings.Contains(err.Error(), field) {
			t.Errorf("the error does not name %s: %v", field, err)
		}
	}
}

// TestStalledPartExcluded: a trainer that submits in parts and never marks
// one ready is excluded after the trainer timeout, with a reason naming
// the part; the other members' step goes on without it.
func TestStalledPartExcluded(t *testing.T) {
	t.Run("trainer timeout below the all-reduce's", func(t *testing.T) {
		stalledPart(t, func(c *node.Config) { c.TrainerTimeout = 3 * time.Second })
	})
	// At the defaults the trainer timeout (5 min) is far above the
	// all-reduce's start and hold timeouts (60 s): the neighbours' attempt
	// fails first and is retried. The part is timed from the submit, so
	// the retries do not restart its clock (issue 26 defect 2).
	t.Run("trainer timeout above the all-reduce's", func(t *testing.T) {
		stalledPart(t, func(c *node.Config) {
			c.TrainerTimeout = 4 * time.Second
			c.AllReduce.StartTimeout, c.AllReduce.HoldTimeout = time.Second, time.Second
		})
	})
}

func stalledPart(t *testing.T, set func(*node.Config)) {
	ns, bufs := joinedMeshConfig(t, 3, 100, set)
	ctx := ctxT(t, 2*time.Minute)
	parts := [][2]int64{{50, 50}, {0, 50}}
	errs := make(chan error, 3)
	for i, b := range bufs {
		go func() {
			err := b.AllReduceParts(ctx, 0, client.ReduceOptions{}, parts)
			for k := range 2 {
				if err == nil && (i != 2 || k == 0) { // member 2 never marks part 1
					err = b.PartReady(ctx, 0, k)
				}
			}
			if err == nil {
				_, err = b.Wait(ctx, 0)
			}
			errs <- fmt.Errorf("member %d: %w", i, err)
		}()
	}
	var stalled error
	ok := 0
	for range 3 {
		err := <-errs
		switch {
		case strings.HasPrefix(err.Error(), "member 2"):
			stalled = err
		default:
			ok++
			if err := unwrap(err); err != nil {
				// The first attempt ran with member 2 and failed: the
				// survivors are told once the retried round applies.
				t.Errorf("%v", err)
			}
		}
	}
	wantCode(t, "the stalled trainer", unwrap(stalled), localapi.CodeExcluded)
	if !strings.Contains(stalled.Error(), "part 1 of step 0") {
		t.Errorf("stalled trainer's error does not name the part: %v", stalled)
	}
	if st := ns[2].Status(); !strings.Contains(st.Rounds.Reason, "part 1 of step 0") {
		t.Errorf("stalled trainer's node: %s (%s)", st.Rounds.State, st.Rounds.Reason)
	}
}

func unwrap(err error) error {
	if u, ok := err.(interface{ Unwrap() error }); ok {
		return u.Unwrap()
	}
	return err
}

// TestStatusNamesWhomAStepWaitsFor (issue 25 item 9): a member whose
// trainer submitted a step while another's has not says in status whom
// the step waits for; once that trainer submits, the list is empty.
func TestStatusNamesWhomAStepWaitsFor(t *testing.T) {
	ns, bufs := joinedMesh(t, 2, 10, time.Minute)
	ctx := ctxT(t, 2*time.Minute)
	done := make(chan error, 1)
	go func() { _, err := bufs[0].AllReduce(ctx, 0, client.ReduceOptions{}); done <- err }()
	other := ns[1].Status().Self.ID
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if w := ns[0].Status().Rounds.WaitingFor; len(w) == 1 && w[0] == other {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never named %s as awaited: %+v", other, ns[0].Status().Rounds)
		}
	}
	if _, err := bufs[1].AllReduce(ctx, 0, client.ReduceOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w := ns[0].Status().Rounds.WaitingFor; len(w) != 0 {
		t.Errorf("after the step, status still waits for %v", w)
	}
}
