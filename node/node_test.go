package node_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/ringmesh/ringmesh/internal/systest"
	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node"
	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testNode runs a node in this process until the test ends.
type testNode struct {
	*node.Node
	dir  string
	done chan error
}

func startNode(t *testing.T, dir string, minMembers int, join ...string) *testNode {
	t.Helper()
	return startNodeTimeout(t, dir, minMembers, time.Minute, join...)
}

func startNodeTimeout(t *testing.T, dir string, minMembers int, trainerTimeout time.Duration, join ...string) *testNode {
	t.Helper()
	cfg := node.LocalConfig()
	cfg.DataDir = dir
	cfg.MinMembers = minMembers
	cfg.TrainerTimeout = trainerTimeout
	cfg.Mesh.Join = join
	return startNodeConfig(t, cfg)
}

func startNodeConfig(t *testing.T, cfg node.Config) *testNode {
	t.Helper()
	dir := cfg.DataDir
	ctx, cancel := context.WithCancel(context.Background())
	var logger *slog.Logger
	if os.Getenv("NODE_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	n, err := node.Open(ctx, cfg, logger)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	tn := &testNode{Node: n, dir: dir, done: make(chan error, 1)}
	go func() { tn.done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-tn.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("node did not stop within 30s")
		}
	})
	return tn
}

func (tn *testNode) addr() string { return tn.Status().Self.Addrs[0] }

func dial(t *testing.T, dir string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Code != code {
		t.Errorf("%s: got %v, want code %s", what, err, code)
	}
}

// TestAPIBadRequests: malformed or out-of-order calls get clear errors and
// the node keeps serving.
func TestAPIBadRequests(t *testing.T) {
	dir := t.TempDir()
	startNode(t, dir, 1)
	c := dial(t, dir)
	ctx := ctxT(t, time.Minute)

	_, err := c.Call(ctx, localapi.Request{Op: "frobnicate"})
	wantCode(t, "unknown op", err, localapi.CodeBadRequest)
	_, err = c.Call(ctx, localapi.Request{Op: localapi.OpHello, Version: 99})
	wantCode(t, "wrong version", err, localapi.CodeUnsupportedVersion)
	_, err = c.Call(ctx, localapi.Request{Op: localapi.OpRegister, Path: filepath.Join(dir, "missing"), Bytes: 64})
	wantCode(t, "register by path", err, localapi.CodeBadRequest)
	_, err = c.Call(ctx, localapi.Request{Op: localapi.OpRegisterFD, Bytes: 64})
	wantCode(t, "register_fd without a descriptor", err, localapi.CodeBadRequest)
	// A memfd its client could still shrink is refused: the node would
	// take SIGBUS reading a page the file no longer has.
	fd, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	unix.Ftruncate(fd, 64)
	raw, err := net.Dial("unix", filepath.Join(dir, localapi.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var resp0 localapi.Response
	if err := localapi.WriteFrameFD(raw.(*net.UnixConn), localapi.Request{ID: 1, Op: localapi.OpRegisterFD, Bytes: 64}, fd); err != nil {
		t.Fatal(err)
	}
	if err := localapi.ReadFrame(raw, &resp0); err != nil || resp0.Code != localapi.CodeBadRequest || !strings.Contains(resp0.Error, "not sealed") {
		t.Errorf("unsealed memfd: %+v, %v; want bad_request: not sealed", resp0, err)
	}

	buf, err := c.NewBuffer(ctx, 16)
	if err != nil {
		t.Fatal(err)
	}
	_, err = buf.AllReduce(ctx, 0, client.ReduceOptions{})
	wantCode(t, "all-reduce before join", err, localapi.CodeNotMember)

	resp, err := c.Join(ctx, 7)
	if err != nil || resp.Step != 7 {
		t.Fatalf("join: %+v, %v; want step 7 (a lone node forms a mesh at the trainer's start step)", resp, err)
	}
	_, err = c.Call(ctx, localapi.Request{Op: localapi.OpAllReduce, Step: 7, Buffer: 1, Count: 17})
	wantCode(t, "count beyond the buffer", err, localapi.CodeBadRequest)
	_, err = c.Call(ctx, localapi.Request{Op: localapi.OpAllReduce, Step: 7, Buffer: 1, Count: 1 << 61})
	wantCode(t, "count whose byte size overflows", err, localapi.CodeBadRequest)
	_, err = c.Call(ctx, localapi.Request{Op: localapi.OpAllReduce, Step: 7, Buffer: 1, Count: 1, Offset: math.MaxInt64 - 3})
	wantCode(t, "offset at the end of int64", err, localapi.CodeBadRequest)
	_, err = c.Call(ctx, localapi.Request{Op: localapi.OpAllReduce, Step: 7, Buffer: 1, Count: 4, Offset: 2})
	wantCode(t, "misaligned offset", err, localapi.CodeBadRequest)
	_, err = c.Call(ctx, localapi.Request{Op: localapi.OpAllReduce, Step: 7, Buffer: 1, Count: 4, Reduce: "wmean", Weight: 1e300})
	wantCode(t, "absurd weight", err, localapi.CodeBadRequest)
	_, err = c.Call(ctx, localapi.Request{Op: localapi.OpAllReduce, Step: 7, Buffer: 99, Count: 4})
	wantCode(t, "unknown buffer", err, localapi.CodeBadRequest)
	_, err = buf.AllReduce(ctx, 7, client.ReduceOptions{Reduce: "median"})
	wantCode(t, "unknown reduce op", err, localapi.CodeBadRequest)
	_, err = buf.AllReduce(ctx, 7, client.ReduceOptions{Wire: "int4"})
	wantCode(t, "unknown wire type", err, localapi.CodeBadRequest)
	_, err = buf.AllReduce(ctx, 9, client.ReduceOptions{})
	wantCode(t, "wrong step", err, localapi.CodeStepMismatch)
	var ae *client.APIError
	if errors.As(err, &ae) && ae.NextStep != 7 {
		t.Errorf("step mismatch names next step %d, want 7", ae.NextStep)
	}

	for i := range buf.Data {
		buf.Data[i] = float32(i)
	}
	resp, err = buf.AllReduce(ctx, 7, client.ReduceOptions{Reduce: "sum"})
	if err != nil || resp.NextStep != 8 || len(resp.Members) != 1 || buf.Data[5] != 5 {
		t.Fatalf("all-reduce on a mesh of one: %+v, %v, data[5]=%v", resp, err, buf.Data[5])
	}
}

// TestAPIBusyAndDisconnect: a second all-reduce for a step in flight is
// refused; a trainer that disconnects mid-round lets the round finish for
// the others and its node stops offering rounds (the mesh goes on).
func TestAPIBusyAndDisconnect(t *testing.T) {
	a := startNode(t, t.TempDir(), 2)
	b := startNode(t, t.TempDir(), 2, a.addr())
	ca, cb := dial(t, a.dir), dial(t, b.dir)
	ctx := ctxT(t, 2*time.Minute)
	joined := make(chan error, 1)
	go func() { _, err := cb.Join(ctx, 0); joined <- err }()
	if _, err := ca.Join(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := <-joined; err != nil {
		t.Fatal(err)
	}
	ba, err := ca.NewBuffer(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := cb.NewBuffer(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	// A second client on a's node, while a's trainer waits in step 0 for
	// b's: one trainer per node, so its join and its all-reduce are refused
	// busy, naming the attached trainer, and change nothing.
	ca2 := dial(t, a.dir)
	bufA2, err := ca2.NewBuffer(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	calls := make(chan error, 2)
	for _, buf := range []*client.Buffer{ba, bufA2} {
		go func() { _, err := buf.AllReduce(ctx, 0, client.ReduceOptions{}); calls <- err }()
	}
	if err := <-calls; !client.IsCode(err, localapi.CodeBusy) || !strings.Contains(err.Error(), "a trainer (pid") {
		t.Fatalf("one of two concurrent all-reduces: %v, want busy naming the attached trainer", err)
	}
	_, err = ca2.Join(ctx, 0)
	wantCode(t, "a second trainer's join", err, localapi.CodeBusy)
	wantCode(t, "a second trainer's leave", ca2.Leave(ctx), localapi.CodeBusy)
	ca2.Close() // its disconnect is not the trainer's: a stays a member
	if _, err := bb.AllReduce(ctx, 0, client.ReduceOptions{}); err != nil {
		t.Fatalf("b step 0: %v", err)
	}
	if err := <-calls; err != nil {
		t.Fatalf("a step 0: %v", err)
	}

	// a's trainer goes away; b's mesh must go on alone (a said it stopped,
	// so it no longer counts towards the majority).
	ca.Close()
	systest.Eventually(t, 60*time.Second, func() error {
		_, err := bb.AllReduce(ctx, 1, client.ReduceOptions{})
		if err != nil {
			if client.IsCode(err, localapi.CodeWaiting) {
				cb.Join(ctx, 0)
			}
			return err
		}
		return nil
	})
	st := a.Status()
	if st.Rounds.State != "idle" || st.Rounds.Reason != "trainer disconnected" {
		t.Errorf("a after its trainer left: %s (%s)", st.Rounds.State, st.Rounds.Reason)
	}
}

// TestHungTrainerExcluded: a trainer that never submits the next step is
// excluded after the trainer timeout; the others go on and its node says why.
func TestHungTrainerExcluded(t *testing.T) {
	// The production failure detector (suspect after 3 s, not 600 ms):
	// what this test excludes is a trainer, and under -race on a loaded
	// 2-core machine the fast one suspected live nodes, so a call failed
	// with "waiting: 1 of 3 members reachable" instead.
	start := func(join ...string) *testNode {
		cfg := node.LocalConfig()
		cfg.DataDir, cfg.MinMembers, cfg.TrainerTimeout, cfg.Mesh.Join = t.TempDir(), 3, 3*time.Second, join
		def := mesh.DefaultConfig()
		cfg.Mesh.HeartbeatInterval, cfg.Mesh.SuspectTimeout = def.HeartbeatInterval, def.SuspectTimeout
		cfg.Mesh.ProbeTimeout, cfg.Mesh.DeadTimeout = def.ProbeTimeout, def.DeadTimeout
		return startNodeConfig(t, cfg)
	}
	ns := []*testNode{start()}
	for range 2 {
		ns = append(ns, start(ns[0].addr()))
	}
	ctx := ctxT(t, 2*time.Minute)
	var bufs []*client.Buffer
	errs := make(chan error, 3)
	for _, n := range ns {
		c := dial(t, n.dir)
		b, err := c.NewBuffer(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		bufs = append(bufs, b)
		go func() { _, err := c.Join(ctx, 0); errs <- err }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range bufs {
		go func() {
			_, err := b.AllReduce(ctx, 0, client.ReduceOptions{})
			errs <- fmt.Errorf("node %d: %w", i, err)
		}()
	}
	for range 3 {
		if err := <-errs; errors.Unwrap(err) != nil {
			t.Fatal(err)
		}
	}
	// Node 2's trainer hangs: only 0 and 1 call step 1.
	for i := range 2 {
		go func() { _, err := bufs[i].AllReduce(ctx, 1, client.ReduceOptions{}); errs <- err }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("step 1 without the hung trainer: %v", err)
		}
	}
	st := ns[2].Status()
	if st.Rounds.State != "idle" || !strings.Contains(st.Rounds.Reason, "did not submit step 1") {
		t.Errorf("hung trainer's node: %s (%s), want idle, excluded", st.Rounds.State, st.Rounds.Reason)
	}
	_, err := bufs[2].AllReduce(ctx, 1, client.ReduceOptions{})
	wantCode(t, "hung trainer's late call", err, localapi.CodeNotMember)
}

// TestDataDirAndSocketPrivate: a data dir open to other users is made 0700
// before anything is written in it (so the socket, bound before its chmod,
// is never reachable by them), and the socket ends up 0600.
func TestDataDirAndSocketPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	startNode(t, dir, 1)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v, %v; want mode 0700", fi.Mode(), err)
	}
	fi, err := os.Stat(filepath.Join(dir, localapi.SocketName))
	if err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("socket: %v, %v; want no group or other access", fi.Mode(), err)
	}
}
