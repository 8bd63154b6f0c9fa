package node

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/mesh"
)

// meshAPI is what rounds need of the mesh.
type meshAPI interface {
	View() mesh.View
	Watch(ctx context.Context) <-chan mesh.View
	SetPayload(p []byte) error
	Suspect(p peer.ID, reason error)
	Self() peer.ID
}

// attempt is the local state of one try at a round: step k over ring R
// (key identifies both, and the agreed list the ring came from).
type attempt struct {
	step      uint64
	key       [32]byte
	ring      []member
	hasResult bool // the all-reduce finished here: dst holds the full result
	fenced    bool // answered "no result" to a status query: never send ready
	cancel    context.CancelFunc
	readies   map[peer.ID]bool // leader: members that reported ready
	commit    []member         // non-nil once a commit for key arrived (the next list)
	aborted   bool             // a member said key can never commit
	queried   bool             // a member asked for our status: resolve by recovery only
}

// commitRecord is the last round this node applied.
type commitRecord struct {
	step uint64
	key  [32]byte
	ring []member
	next []member // the agreed list for step+1
}

// engine owns the round state of one node. Its mutex guards leaf data only
// and is never held across I/O; changes are broadcast by closing changed.
type engine struct {
	cfg  Config
	self peer.ID
	boot uint64
	mesh meshAPI
	log  *slog.Logger

	mu        sync.Mutex
	changed   chan struct{}
	state     string
	reason    string
	list      []member // the agreed list for nextStep
	nextStep  uint64
	startStep uint64   // forming: the step this node would start a new mesh at
	formHash  string   // forming: hash prefix of the forming set this node sees
	formSet   []member // forming: that set
	formStart uint64   // forming: the largest start step in it
	lastAsk   time.Time
	cur       *attempt
	last      *commitRecord
	joiners   map[peer.ID]joinReq // leader side: pending join requests
	lastApply time.Time           // when the trainer last got a result (or was admitted)
	busy      bool                // an all-reduce call is in flight
}

type joinReq struct {
	boot uint64
	at   time.Time
}

func newEngine(cfg Config, m meshAPI, boot uint64, log *slog.Logger) *engine {
	return &engine{
		cfg: cfg, self: m.Self(), boot: boot, mesh: m, log: log,
		changed: make(chan struct{}), state: stateIdle,
		joiners: make(map[peer.ID]joinReq),
	}
}

// notifyLocked wakes every waiter. Call with mu held.
func (e *engine) notifyLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// setStateLocked moves to a new state and advertises it.
func (e *engine) setStateLocked(state, reason string) {
	if e.state != state || e.reason != reason {
		e.log.Info("round state", "state", state, "reason", reason, "step", e.nextStep)
	}
	e.state, e.reason = state, reason
	e.publishLocked()
	e.notifyLocked()
}

func (e *engine) publishLocked() {
	p := payload{State: e.state, Boot: e.boot, Step: e.nextStep}
	switch e.state {
	case stateTraining, stateWaiting:
		p.List = shortHash(listHash(e.list))
	case stateForming:
		p.Step = e.startStep
		p.Form = e.formHash
	}
	b, _ := json.Marshal(p)
	if err := e.mesh.SetPayload(b); err != nil {
		e.log.Warn("set payload", "err", err)
	}
}

// snapshot returns what status and membership report.
func (e *engine) snapshot() (state, reason string, step uint64, list []member) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state, e.reason, e.nextStep, append([]member(nil), e.list...)
}

// wait blocks until the engine changes, the view changes, d passes or ctx is
// done. It returns ctx.Err() only.
func (e *engine) wait(ctx context.Context, views <-chan mesh.View, d time.Duration) error {
	e.mu.Lock()
	ch := e.changed
	e.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-ch:
	case <-views:
	case <-t.C:
	}
	return nil
}

// errRoundState is returned by round calls made in the wrong state; Code is
// the local API error code.
type roundError struct {
	Code     string
	Msg      string
	NextStep uint64
}

func (e *roundError) Error() string { return e.Msg }
