package roundrun

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/internal/streamset"
	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// Config configures a driver: plain settings (its collaborators are
// Deps). Every duration is a bound on a wait.
type Config struct {
	// Self is this node's peer ID, its name in the machine's lists.
	Self peer.ID
	// Mesh is the mesh's name, part of every all-reduce round's identity.
	Mesh string
	// Machine configures the rounds machine. Its Resend also paces the
	// round streams' dials, and its TrainerTimeout bounds the wait for a
	// part of a step that the trainer has not marked ready.
	Machine rounds.Config
	// Tick is how often the machine looks at the clock.
	Tick time.Duration
	// RPCTimeout bounds opening a round stream and writing one message.
	RPCTimeout time.Duration
	// Seeded: the node was given peers to join (mesh.Config.Join). Its
	// view is not settled, so it forms no mesh of its own, until one of
	// them is live or settleTimeout has passed.
	Seeded bool
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.Self == "":
		return errors.New("roundrun: self is required")
	case c.Tick <= 0 || c.RPCTimeout <= 0 || c.Machine.Resend <= 0:
		return errors.New("roundrun: tick, rpc timeout and resend must be positive")
	case c.Machine.TrainerTimeout < 0:
		return errors.New("roundrun: trainer timeout must not be negative")
	}
	return nil
}

// Deps are the driver's collaborators: what it asks of the rest of the
// node. All are required but Metrics and Logger (nil: none).
type Deps struct {
	// Host carries the round streams (Protocol).
	Host Host
	// Mesh is the membership the machine's view is made of, and where a
	// peer whose all-reduce stream failed is reported.
	Mesh Mesh
	// Peers turns a view into the machine's peers: the view's other
	// members, live or not, with the round Info their heartbeat payload
	// advertises (the payload's format is the node's).
	Peers func(mesh.View) []rounds.Peer
	// Publish advertises the machine's Info and the local trainer's
	// samples per second in this node's heartbeat payload. It is called
	// on the loop and must not block; an error is logged.
	Publish func(i rounds.Info, samples float64) error
	// Reducer runs a round's all-reduce.
	Reducer Reducer
	// Store holds the machine's durable state (OpenStore); New starts the
	// machine from the state it read.
	Store *Store
	// Result is the result buffer (OpenResult). The driver owns it from
	// New on: Close closes it.
	Result *ResultBuf
	// Metrics counts applied rounds.
	Metrics Metrics
	// Logger logs the round state's changes, retried attempts and faults.
	Logger *slog.Logger
}

// Host is what the round streams need of the libp2p host (host.Host has
// it).
type Host interface {
	Network() network.Network
	NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error)
}

// Mesh is the membership as the driver sees it (*mesh.Mesh has it).
type Mesh interface {
	// View is the current view.
	View() mesh.View
	// Watch hands over every new view (the latest wins) until ctx ends.
	Watch(ctx context.Context) <-chan mesh.View
	// Suspect asks failure detection to probe p at once.
	Suspect(p peer.ID, reason error)
}

// Reducer is what rounds need of the all-reduce (*allreduce.Reducer).
type Reducer interface {
	AllReduce(ctx context.Context, self peer.ID, r allreduce.Round, src, dst []float32, opt allreduce.Options) (allreduce.Result, error)
}

// Metrics records what the driver does.
type Metrics interface {
	// RoundApplied records a round applied to the trainer's buffer: the
	// attempts it took, the trainer's call (zero: unknown) and its weight
	// (its samples; 0 when it sent none).
	RoundApplied(attempts int, since time.Time, weight float64)
}

type nopMetrics struct{}

func (nopMetrics) RoundApplied(int, time.Time, float64) {}

// reduceDone is an all-reduce's outcome on its way to the loop.
type reduceDone struct {
	ev     rounds.ReduceDone
	weight float64
	// stalled says why the trainer is dropped: it did not mark a part of
	// its buffer ready within TrainerTimeout.
	stalled string
}

// Driver owns a rounds machine. One goroutine (Run) feeds it every event
// (messages, views, the trainer's calls, all-reduce outcomes, ticks) and
// performs its effects; nothing else touches the machine. Its methods
// are safe for concurrent use: a call reaches the machine as a closure
// run on that goroutine.
type Driver struct {
	cfg     Config
	log     *slog.Logger
	host    Host
	mesh    Mesh
	peers   func(mesh.View) []rounds.Peer
	publish func(rounds.Info, float64) error
	reducer Reducer
	metrics Metrics
	m       *rounds.Machine
	store   *Store
	result  *ResultBuf
	boot    string
	start   time.Time

	in      chan rounds.Message
	calls   chan func()
	done    chan reduceDone
	exited  chan struct{}
	inbound streamset.Set // the inbound round streams

	// Owned by run.
	ctx      context.Context
	sub      *Submission
	joins    []chan rounds.Admitted
	reduce   context.CancelFunc
	reduceWG sync.WaitGroup
	// reducing is the running all-reduce's attempt; progress counts the
	// bytes it received (allreduce.Options.Progress) and seen what the
	// last tick reported to the machine.
	reducing rounds.StartReduce
	progress atomic.Int64
	seen     int64
	send     *senders
	// sendMsg sends a round message (d.send.send; tests capture it).
	sendMsg func(rounds.Message)
	// unsaved: a Persist failed, so the machine's state since is not on
	// disk: nothing is sent until a save of its current state succeeds
	// (a promise that leaves must be durable, even one that did not
	// change the state again).
	unsaved bool
	queue   []rounds.Event

	// samples is the local trainer's smoothed samples per second (its
	// weight over the time from the last answer to its next submit);
	// answered is when the last submit was answered.
	samples  float64
	answered time.Time
	link     rounds.Link // the last estimate handed to the machine

	snap       atomic.Pointer[Snapshot]
	inDropped  atomic.Uint64
	badMessage atomic.Uint64
}

// New builds the driver over the state in deps.Store. It does no I/O and
// starts no goroutine: Run does.
func New(cfg Config, deps Deps) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Host == nil || deps.Mesh == nil || deps.Peers == nil || deps.Publish == nil || deps.Reducer == nil ||
		deps.Store == nil || deps.Result == nil {
		return nil, errors.New("roundrun: host, mesh, peers, publish, reducer, store and result are required")
	}
	if deps.Metrics == nil {
		deps.Metrics = nopMetrics{}
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Driver{cfg: cfg, log: deps.Logger, host: deps.Host, mesh: deps.Mesh, peers: deps.Peers, publish: deps.Publish,
		reducer: deps.Reducer, metrics: deps.Metrics, store: deps.Store, result: deps.Result, boot: bootID(), start: time.Now(),
		in: make(chan rounds.Message, 1024), calls: make(chan func()), done: make(chan reduceDone, 4),
		exited: make(chan struct{})}
	st := deps.Store.loaded
	durable := st.Durable
	if durable.Result != nil && (st.Boot == "" || st.Boot != d.boot || int(st.ResultLen) != d.result.len()) {
		// The result buffer did not survive (a reboot): do not claim it.
		durable.Result = nil
	}
	d.m = rounds.New(cfg.Machine, cfg.Self, durable)
	d.publishSnapshot()
	return d, nil
}

// Run drives the machine until ctx ends. Every pending trainer call is
// answered before it returns, and no all-reduce or round stream sender is
// running then.
func (d *Driver) Run(ctx context.Context) error {
	d.ctx = ctx
	d.send = newSenders(ctx, d)
	d.sendMsg = d.send.send
	defer close(d.exited)
	defer d.send.wait()
	views := d.mesh.Watch(ctx)
	tick := time.NewTicker(d.cfg.Tick)
	defer tick.Stop()
	d.step(d.viewEvent(d.mesh.View()))
	for {
		select {
		case <-ctx.Done():
			d.stopReduce()
			d.answer(nil, ErrStopped)
			return nil
		case v, ok := <-views:
			if !ok {
				views = nil
				continue
			}
			d.step(d.viewEvent(v))
		case msg := <-d.in:
			d.step(rounds.Recv{Msg: msg})
		case f := <-d.calls:
			f()
		case r := <-d.done:
			if !d.current(r.ev) {
				// An all-reduce stopped since (its outcome was already
				// given to the machine, or its attempt was replaced).
				continue
			}
			if r.stalled != "" {
				d.stopReduce()
				d.answer(nil, &Error{Reason: rounds.ReasonExcluded, Msg: r.stalled})
				d.step(rounds.TrainerLeave{Reason: r.stalled})
				continue
			}
			if d.sub != nil && r.ev.Err == nil {
				d.sub.weight = r.weight
			}
			d.step(r.ev)
		case <-tick.C:
			d.step(d.tickEvent())
		}
	}
}

// Close resets the inbound round streams and waits for their handlers,
// then closes the result buffer. Call it once Run has returned (or was
// never called).
func (d *Driver) Close() {
	d.inbound.Close()
	d.result.Close()
}

// tickEvent is a Tick, or a ReduceProgress when the running all-reduce
// received bytes since the last tick (the machine bounds a proposal's
// all-reduce phase by its progress).
func (d *Driver) tickEvent() rounds.Event {
	if d.reduce != nil {
		if n := d.progress.Load(); n != d.seen {
			d.seen = n
			return rounds.ReduceProgress{Step: d.reducing.Step, Attempt: d.reducing.Attempt}
		}
	}
	return rounds.Tick{}
}

// settleTimeout bounds how long a node that was told peers to join waits
// for any of them before it may form a mesh of its own.
const settleTimeout = 30 * time.Second

func (d *Driver) viewEvent(v mesh.View) rounds.ViewChanged {
	peers := d.peers(v)
	settled := !d.cfg.Seeded || time.Since(d.start) > settleTimeout ||
		slices.ContainsFunc(peers, func(p rounds.Peer) bool { return p.Live })
	return rounds.ViewChanged{Peers: peers, Settled: settled}
}

// call runs f on the loop goroutine and returns once it has run; false
// when the loop has stopped (f did not run).
func (d *Driver) call(f func()) bool {
	ran := make(chan struct{})
	select {
	case d.calls <- func() { f(); close(ran) }:
		<-ran
		return true
	case <-d.exited:
		return false
	}
}

// step feeds ev and performs the effects (and those of the events they
// queue) in order.
func (d *Driver) step(ev rounds.Event) {
	d.queue = append(d.queue, ev)
	for len(d.queue) > 0 {
		ev := d.queue[0]
		d.queue = d.queue[1:]
		retried := false
		for _, e := range d.m.Step(time.Now(), ev) {
			switch e := e.(type) {
			case rounds.Persist:
				// What follows depends on the state being on disk.
				d.unsaved = !d.persist(e.State)
			case rounds.Send:
				if d.unsaved && !retried {
					retried = true
					d.unsaved = !d.persist(d.m.Durable())
				}
				if !d.unsaved {
					d.sendMsg(e.Msg)
				}
			case rounds.Publish:
				if err := d.publish(e.Info, d.samples); err != nil {
					d.log.Warn("set payload", "err", err)
				}
			case rounds.StartReduce:
				d.startReduce(e)
			case rounds.Apply:
				d.apply(e)
			case rounds.Admitted:
				d.admitted(e)
			case rounds.Fail:
				d.answer(nil, &Error{Reason: e.Reason, Msg: e.Msg, NextStep: e.NextStep})
			}
		}
	}
	d.publishSnapshot()
}

// persist saves the machine's durable state s; false (logged) when it
// could not.
func (d *Driver) persist(s rounds.Durable) bool {
	if err := d.store.save(savedState{Boot: d.boot, ResultLen: uint64(d.result.len()), Durable: s}); err != nil {
		d.log.Error("persist round state; round messages are held until it succeeds", "err", err)
		return false
	}
	return true
}

// answer replies to the pending submit, with res when err is nil.
func (d *Driver) answer(res *Applied, err error) {
	sub := d.sub
	if sub == nil {
		return
	}
	// The trainer may release its buffer once answered: no all-reduce
	// may read it after that (a refusal can come while one runs). The
	// machine learns that the stopped attempt failed.
	if d.reduce != nil {
		d.stopReduce()
		d.queue = append(d.queue, rounds.ReduceDone{Step: d.reducing.Step, Attempt: d.reducing.Attempt,
			Err: errors.New("node: the all-reduce was stopped: the trainer's call was answered")})
	}
	d.sub = nil
	d.answered = time.Now()
	if err == nil {
		sub.reply <- submitResult{res: *res}
		return
	}
	sub.reply <- submitResult{err: err}
}

func (d *Driver) admitted(e rounds.Admitted) {
	d.log.Info("member", "epoch", e.Epoch, "step", e.Step, "members", len(e.List), "formed", e.Formed)
	for _, w := range d.joins {
		w <- e
	}
	d.joins = nil
}

// measure folds a submit's samples (its weight) into the trainer's
// samples per second; at is when its data was complete (the call, or the
// last part marked ready).
func (d *Driver) measure(sub *Submission, at time.Time) {
	if d.answered.IsZero() || !sub.sized() {
		return
	}
	v := sub.opt.Weight / max(at.Sub(d.answered).Seconds(), 1e-4)
	if d.samples == 0 {
		d.samples = v
	} else {
		d.samples += 0.3 * (v - d.samples)
	}
}

// errPartStalled: the trainer did not mark a part ready in time.
var errPartStalled = errors.New("trainer stalled")
