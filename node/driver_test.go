package node

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/node/rounds"
)

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

// selfHost is a host that only knows its ID (all the driver asks of it
// when it starts an all-reduce).
type selfHost struct {
	host.Host
	id peer.ID
}

func (h selfHost) ID() peer.ID { return h.id }

// reduceRound runs the driver's startReduce for e as member self and
// returns the all-reduce round it started.
func reduceRound(t *testing.T, self peer.ID, e rounds.StartReduce) allreduce.Round {
	t.Helper()
	res, err := openResult(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer res.close()
	cr := &captureReducer{}
	d := &driver{n: &Node{reducer: cr, host: selfHost{id: self}}, log: slog.New(slog.DiscardHandler), result: res,
		ctx: context.Background(), done: make(chan reduceDone, 4)}
	d.cfg.Mesh.Mesh = "testmesh"
	d.sub = newSubmit(e.Step, make([]float32, 16), allreduce.Options{}, nil)
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
