package roundrun

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// testMachine is the machine config of a node's LocalConfig.
func testMachine() rounds.Config {
	return rounds.Config{MinMembers: 1, FormWait: 2 * time.Second, FormTimeout: 20 * time.Second,
		Resend: 100 * time.Millisecond, PhaseTimeout: 10 * time.Second, RetryBackoff: 20 * time.Millisecond,
		JoinPoll: 250 * time.Millisecond, JoinTTL: 3 * time.Second, TrainerTimeout: 30 * time.Second, OfferWait: 30 * time.Second}
}

// newPeerID is a fresh Ed25519 peer ID.
func newPeerID(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// captureReducer records the rounds the driver asks for and succeeds.
type captureReducer struct {
	mu     sync.Mutex
	rounds []allreduce.Round
}

func (c *captureReducer) AllReduce(_ context.Context, _ peer.ID, r allreduce.Round, src, dst []float32, _ allreduce.Options) (allreduce.Result, error) {
	c.mu.Lock()
	c.rounds = append(c.rounds, r)
	c.mu.Unlock()
	copy(dst, src)
	return allreduce.Result{TotalWeight: 1}, nil
}

// reduceRound runs the driver's startReduce for e as member self and
// returns the all-reduce round it started.
func reduceRound(t *testing.T, self peer.ID, e rounds.StartReduce) allreduce.Round {
	t.Helper()
	res, err := OpenResult(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	cr := &captureReducer{}
	d := &Driver{cfg: Config{Self: self, Mesh: "testmesh"}, reducer: cr, log: slog.New(slog.DiscardHandler), result: res,
		ctx: context.Background(), done: make(chan reduceDone, 4)}
	d.sub = newSubmission(e.Step, make([]float32, 16), allreduce.Options{}, nil)
	d.startReduce(e)
	if r := <-d.done; r.ev.Err != nil || r.ev.Step != e.Step || r.ev.Attempt != e.Attempt {
		t.Fatalf("all-reduce of step %d attempt %v ended with %+v", e.Step, e.Attempt, r.ev)
	}
	d.stopReduce()
	if len(cr.rounds) != 1 {
		t.Fatalf("%d all-reduces started for one StartReduce", len(cr.rounds))
	}
	return cr.rounds[0]
}

// TestAttemptsHaveTheirOwnRoundIdentity (defect 7: node never set
// allreduce.Round.Attempt, so a step retried over an unchanged ring reused
// the failed attempt's round identity, and allreduce.Config.RetrySameRound
// worked around it): two attempts (ballots) of one step start all-reduces
// with different round identities (mesh name, step, attempt: the header's
// and the inbox's key), whether the same proposer retries over the same
// ring or another proposer uses the same ballot number; every member
// computes the same identity for one attempt. That a stream of a stale
// attempt is not taken into the current one's round is
// allreduce.TestStaleAttemptStreamNotAccepted.
func TestAttemptsHaveTheirOwnRoundIdentity(t *testing.T) {
	a, b, c := peer.ID("member-a"), peer.ID("member-b"), peer.ID("member-c")
	list := []peer.ID{a, b, c}
	attempt := func(n uint64, by peer.ID) rounds.StartReduce {
		return rounds.StartReduce{Step: 7, Epoch: 3, Attempt: rounds.Ballot{N: n, By: by}, Ring: list, List: list}
	}
	ballots := []rounds.StartReduce{
		attempt(1, a),
		attempt(2, a), // the same proposer retries over the same ring
		attempt(2, b), // another proposer, the same ballot number
		attempt(3, c),
	}
	seen := map[string]rounds.Ballot{}
	for _, e := range ballots {
		r := reduceRound(t, a, e)
		if r.Step != e.Step || !slices.Equal(r.Ring, e.Ring) {
			t.Fatalf("attempt %v: round %v step %d ring %v, want step %d ring %v", e.Attempt, r, r.Step, r.Ring, e.Step, e.Ring)
		}
		if r.Attempt == 0 {
			t.Errorf("attempt %v: Round.Attempt not set", e.Attempt)
		}
		id := fmt.Sprintf("%q/%d/%d", r.Mesh, r.Step, r.Attempt)
		if o, ok := seen[id]; ok {
			t.Fatalf("attempts %v and %v of step %d share the all-reduce round identity %s", o, e.Attempt, e.Step, id)
		}
		seen[id] = e.Attempt
		// Every ring member starts the same round for the attempt.
		for _, self := range list[1:] {
			if o := reduceRound(t, self, e); o.Mesh != r.Mesh || o.Step != r.Step || o.Attempt != r.Attempt {
				t.Fatalf("attempt %v: member %s starts round %v, member %s round %v", e.Attempt, self, o, a, r)
			}
		}
	}
}

// TestFailedPersistHoldsPromises (issue 26 defect 9): when the round state
// cannot be written, no promise leaves, not even for a prepare sent again
// (which does not change the state again, so the machine asks for no new
// write): a promise is sent only once the state that holds it is on disk.
func TestFailedPersistHoldsPromises(t *testing.T) {
	ids := make([]peer.ID, 3)
	for i := range ids {
		ids[i] = newPeerID(t)
	}
	slices.Sort(ids)
	a, b := ids[0], ids[1]
	res, err := OpenResult(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	dir := filepath.Join(t.TempDir(), "not-yet") // missing: every save fails
	var sent []rounds.Message
	d := &Driver{log: slog.New(slog.DiscardHandler), result: res, store: &Store{dir: dir}, ctx: context.Background(),
		m:       rounds.New(testMachine(), a, rounds.Durable{Epoch: 1, List: ids}),
		sendMsg: func(m rounds.Message) { sent = append(sent, m) }}
	d.m.Step(time.Now(), rounds.Tick{}) // its first heartbeat (this driver has no mesh)
	ballot := rounds.Ballot{N: 1, By: b}
	prepare := rounds.Message{Type: rounds.MsgPrepare, From: b, To: a, Epoch: 1, Ballot: ballot}
	promises := func() int {
		n := 0
		for _, m := range sent {
			if m.Type == rounds.MsgPromise {
				n++
			}
		}
		return n
	}
	d.step(rounds.Recv{Msg: prepare})
	d.step(rounds.Recv{Msg: prepare}) // resent
	if n := promises(); n != 0 {
		t.Fatalf("%d promises sent while the state could not be written", n)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	d.step(rounds.Recv{Msg: prepare})
	if n := promises(); n != 1 {
		t.Fatalf("%d promises sent once the state could be written, want 1", n)
	}
	_, saved, err := openStateStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if saved.Durable.Promised != ballot {
		t.Fatalf("the state on disk promised %v, want %v (the promise that left)", saved.Durable.Promised, ballot)
	}
}

// blockingReducer's all-reduce reads its source until its context ends.
type blockingReducer struct {
	started  chan struct{}
	returned atomic.Bool
}

func (b *blockingReducer) AllReduce(ctx context.Context, _ peer.ID, _ allreduce.Round, _, _ []float32, _ allreduce.Options) (allreduce.Result, error) {
	close(b.started)
	<-ctx.Done()
	b.returned.Store(true)
	return allreduce.Result{}, ctx.Err()
}

// TestRefusalStopsTheReduceFirst (issue 26 defect 8): a refusal (a Fail
// effect) that answers the trainer while its all-reduce runs stops that
// all-reduce first, so the trainer may release its buffer at once; the
// machine is told the attempt failed.
func TestRefusalStopsTheReduceFirst(t *testing.T) {
	self := newPeerID(t)
	res, err := OpenResult(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	br := &blockingReducer{started: make(chan struct{})}
	d := &Driver{cfg: Config{Self: self}, reducer: br, log: slog.New(slog.DiscardHandler), result: res,
		store: &Store{dir: t.TempDir()}, ctx: context.Background(), done: make(chan reduceDone, 4),
		m:       rounds.New(testMachine(), self, rounds.Durable{Epoch: 1, List: []peer.ID{self}}),
		sendMsg: func(rounds.Message) {}}
	now := time.Now()
	d.m.Step(now, rounds.TrainerJoin{StartStep: 0})
	d.m.Step(now, rounds.ViewChanged{Settled: true}) // a member in training (outside the driver: no mesh here)
	sub := newSubmission(0, make([]float32, 16), allreduce.Options{Wire: allreduce.Float32, Op: allreduce.Sum}, nil)
	d.sub = sub
	d.step(rounds.Submit{Step: 0})
	<-br.started
	// A second submit of the step is refused busy: that answers the
	// pending call.
	d.step(rounds.Submit{Step: 0})
	select {
	case r := <-sub.reply:
		if r.err == nil {
			t.Fatal("the refusal answered success")
		}
	default:
		t.Fatal("the trainer was not answered")
	}
	if !br.returned.Load() {
		t.Fatal("the trainer was answered while its all-reduce still read its buffer")
	}
	d.stopReduce()
}
