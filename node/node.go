package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"golang.org/x/sync/errgroup"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/mesh"
)

// Config configures a node. Every duration is a bound on a wait: nothing in
// a round waits without one.
type Config struct {
	// DataDir holds the identity key, the control socket and the checkpoint
	// store. Required.
	DataDir string
	// Mesh configures the libp2p host, discovery and membership. Its DataDir
	// is set from DataDir.
	Mesh mesh.Config
	// AllReduce configures the ring all-reduce (chunk size, frame timeouts).
	AllReduce allreduce.Config
	// MinMembers is how many nodes must be forming before they start a new
	// mesh when none is training. Default 1: the first node trains alone and
	// the others join it. Set it to the expected world size to start a job
	// with everyone at step 0.
	MinMembers int
	// CommitTimeout bounds the wait for the commit of a round once the
	// all-reduce is done, and the recovery that follows. Default 10s.
	CommitTimeout time.Duration
	// RPCTimeout bounds one round control message (ready, commit, status,
	// join). Default 5s.
	RPCTimeout time.Duration
	// RetryBackoff is the first pause between attempts of a round; it
	// doubles up to 20x. Default 20ms.
	RetryBackoff time.Duration
	// JoinPoll is how often a joining node asks the mesh to admit it, and
	// how often the state loop looks at the view. Default 250ms.
	JoinPoll time.Duration
	// JoinRequestTTL is how long a join request counts; a joiner that stops
	// asking is not admitted. Default 3s.
	JoinRequestTTL time.Duration
	// TrainerTimeout excludes a member whose trainer has not submitted the
	// next step this long after the previous one was applied, so a hung
	// trainer cannot stall the mesh. It must exceed the slowest step's
	// compute time. Default 5m; 0 disables.
	TrainerTimeout time.Duration
	// Checkpoint configures the checkpoint store (retention Keep, default 3),
	// gossip, fetches and replication (Replicas, default 2).
	Checkpoint CheckpointConfig
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		Mesh:           mesh.DefaultConfig(),
		AllReduce:      allreduce.DefaultConfig(),
		MinMembers:     1,
		CommitTimeout:  10 * time.Second,
		RPCTimeout:     5 * time.Second,
		RetryBackoff:   20 * time.Millisecond,
		JoinPoll:       250 * time.Millisecond,
		JoinRequestTTL: 3 * time.Second,
		TrainerTimeout: 5 * time.Minute,
		Checkpoint:     DefaultCheckpointConfig(),
	}
}

// LocalConfig returns a preset for tests and local runs on 127.0.0.1.
func LocalConfig() Config {
	c := DefaultConfig()
	c.Mesh = mesh.LocalConfig()
	c.AllReduce = allreduce.LocalConfig()
	c.TrainerTimeout = 30 * time.Second
	c.Checkpoint = LocalCheckpointConfig()
	return c
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("node: data dir is required")
	case c.MinMembers < 1:
		return fmt.Errorf("node: min members %d < 1", c.MinMembers)
	case c.CommitTimeout <= 0 || c.RPCTimeout <= 0 || c.RetryBackoff <= 0 || c.JoinPoll <= 0 || c.JoinRequestTTL <= 0:
		return errors.New("node: commit timeout, rpc timeout, retry backoff, join poll and join request ttl must be positive")
	case c.TrainerTimeout < 0:
		return errors.New("node: trainer timeout must not be negative")
	}
	m := c.Mesh
	m.DataDir = c.DataDir
	if err := m.Validate(); err != nil {
		return err
	}
	if err := c.Checkpoint.Validate(); err != nil {
		return err
	}
	return c.AllReduce.Validate()
}

// Node is one ringmesh node.
type Node struct {
	cfg     Config
	log     *slog.Logger
	mesh    *mesh.Mesh
	host    host.Host
	tr      *allreduce.StreamTransport
	reducer reducer
	eng     *engine
	metrics *metrics
	api     *apiServer
	ckpt    *checkpoints

	runCtx    context.Context
	runCancel context.CancelFunc
	wg        sync.WaitGroup // goroutines of rounds and round messages

	scratchMu sync.Mutex
	scratchB  []float32
}

// Open builds the node: the libp2p host (listening), the all-reduce and
// round protocols, and the control socket. Run starts it.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Node, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.Mesh.DataDir = cfg.DataDir
	// Rounds retry a step over an unchanged ring with an identical Round.
	cfg.AllReduce.RetrySameRound = true
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: logger.With("component", "node"), metrics: &metrics{}}
	m, err := mesh.Open(ctx, cfg.Mesh, logger, nil)
	if err != nil {
		return nil, err
	}
	n.mesh, n.host = m, m.Host()
	n.tr = allreduce.NewStreamTransport(n.host, cfg.AllReduce, logger)
	n.reducer = allreduce.New(cfg.AllReduce, n.tr, logger, nil)
	n.eng = newEngine(cfg, m, m.Incarnation(), n.log)
	if n.ckpt, err = openCheckpoints(cfg.Checkpoint, cfg.DataDir, m, logger); err != nil {
		n.tr.Close()
		m.Close()
		return nil, err
	}
	n.runCtx, n.runCancel = context.WithCancel(context.Background())
	n.api, err = listenAPI(n, cfg.DataDir)
	if err != nil {
		n.ckpt.close()
		n.tr.Close()
		m.Close()
		return nil, err
	}
	n.host.SetStreamHandler(RoundProtocol, n.handleRound)
	n.eng.mu.Lock()
	n.eng.publishLocked()
	n.eng.mu.Unlock()
	return n, nil
}

// Mesh returns the node's mesh.
func (n *Node) Mesh() *mesh.Mesh { return n.mesh }

// Run runs the node until ctx is done, then leaves gracefully: the mesh
// hears that it leaves, streams are closed, and every goroutine has exited
// when Run returns. Run closes the node.
func (n *Node) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return n.mesh.Run(gctx) })
	g.Go(func() error { return n.stateLoop(gctx) })
	g.Go(func() error { return n.api.serve(gctx) })
	g.Go(func() error { return n.ckpt.run(gctx, n.mesh) })
	err := g.Wait()
	n.shutdown()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

func (n *Node) shutdown() {
	n.leave("node shutting down")
	n.runCancel()
	n.api.close()
	n.wg.Wait()
	n.ckpt.close()
	n.host.RemoveStreamHandler(RoundProtocol)
	n.tr.Close()
	n.mesh.Close()
}

// goRound runs f on a goroutine that shutdown waits for.
func (n *Node) goRound(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// scratch returns a reusable result buffer of size elements. One all-reduce
// runs at a time per node.
func (n *Node) scratch(size int) []float32 {
	n.scratchMu.Lock()
	defer n.scratchMu.Unlock()
	if cap(n.scratchB) < size {
		n.scratchB = make([]float32, size)
	}
	return n.scratchB[:size]
}
