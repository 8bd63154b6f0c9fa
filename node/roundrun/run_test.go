package roundrun

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// aloneMesh is a mesh of one: no peers, no view changes.
type aloneMesh struct{}

func (aloneMesh) View() mesh.View                            { return mesh.View{} }
func (aloneMesh) Watch(ctx context.Context) <-chan mesh.View { return make(chan mesh.View) }
func (aloneMesh) Suspect(peer.ID, error)                     {}

// noHost opens no streams: a mesh of one sends no round messages.
type noHost struct{}

func (noHost) Network() network.Network { panic("a mesh of one dials nobody") }
func (noHost) NewStream(context.Context, peer.ID, ...protocol.ID) (network.Stream, error) {
	return nil, errors.New("a mesh of one opens no streams")
}

// TestStopAnswersEveryCall drives a driver through its typed calls over
// collaborators that are not a node (a mesh of one, an all-reduce that
// blocks): the trainer joins and forms, submits, and when Run's context
// ends the pending submission is answered ErrStopped once its all-reduce
// has returned; Run returns, and later calls are answered ErrStopped too.
func TestStopAnswersEveryCall(t *testing.T) {
	self := newPeerID(t)
	dir := t.TempDir()
	store, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	res, err := OpenResult(dir)
	if err != nil {
		t.Fatal(err)
	}
	mc := testMachine()
	mc.FormWait = 10 * time.Millisecond
	br := &blockingReducer{started: make(chan struct{})}
	var published rounds.Info
	d, err := New(Config{Self: self, Mesh: "test", Machine: mc, Tick: 5 * time.Millisecond, RPCTimeout: time.Second},
		Deps{Host: noHost{}, Mesh: aloneMesh{}, Peers: func(mesh.View) []rounds.Peer { return nil },
			Publish: func(i rounds.Info, _ float64) error { published = i; return nil }, // on the loop only
			Reducer: br, Store: store, Result: res})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- d.Run(ctx) }()

	jctx, jcancel := context.WithTimeout(ctx, 30*time.Second)
	defer jcancel()
	a, err := d.Join(jctx, rounds.TrainerJoin{StartStep: 0})
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	if !a.Formed || len(a.List) != 1 || a.List[0] != self || !d.Fresh(a) {
		t.Fatalf("admitted %+v (fresh %v), want a formed list of this node alone that decided nothing yet", a, d.Fresh(a))
	}
	if sn := d.Snapshot(); sn.State != rounds.StateTraining || len(sn.List) != 1 {
		t.Fatalf("snapshot after the join: %+v, want a member training alone", sn)
	}
	sub, err := d.Submit(a.Step, make([]float32, 8), allreduce.Options{Wire: allreduce.Float32, Op: allreduce.Sum}, nil)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	<-br.started
	cancel()
	if _, err := sub.Wait(); !errors.Is(err, ErrStopped) {
		t.Fatalf("pending submission answered %v, want ErrStopped", err)
	}
	if !br.returned.Load() {
		t.Fatal("the submission was answered while its all-reduce still ran")
	}
	if err := <-ran; err != nil {
		t.Fatalf("run: %v", err)
	}
	if published.State == "" {
		t.Error("the machine's Info was never published")
	}
	if _, err := d.Join(context.Background(), rounds.TrainerJoin{}); !errors.Is(err, ErrStopped) {
		t.Errorf("join after stop: %v, want ErrStopped", err)
	}
	if _, err := d.Submit(a.Step, make([]float32, 8), allreduce.Options{}, nil); !errors.Is(err, ErrStopped) {
		t.Errorf("submit after stop: %v, want ErrStopped", err)
	}
	if err := d.Reform(0, func(uint64, uint64) { t.Error("reform ran on a stopped driver") }); !errors.Is(err, ErrStopped) {
		t.Errorf("reform after stop: %v, want ErrStopped", err)
	}
}
