package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"golang.org/x/sync/errgroup"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/apiserver"
	"github.com/ringmesh/ringmesh/node/roundrun"
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
	// with everyone at step 0 (and to more than half the hosts to rule out
	// two meshes forming on two sides of a partition at start).
	MinMembers int
	// FormWait is how long a node whose trainer joined looks for a training
	// mesh (and how long its view must gain no new peer) before it may form
	// a new one. Default 2s.
	FormWait time.Duration
	// FormTimeout gives up a newly formed list that decides no step this
	// long (too few of its members took their place); its members form
	// again. Default 20s.
	FormTimeout time.Duration
	// CommitTimeout bounds each phase of a round's proposal (promises, the
	// all-reduce, accepts); a phase that runs out is retried with a higher
	// ballot. The all-reduce phase runs out only after CommitTimeout
	// without progress (the proposer's all-reduce received no bytes and no
	// member reported ready), so a round longer than it completes.
	// Default 10s.
	CommitTimeout time.Duration
	// RPCTimeout bounds opening a round stream and writing one message.
	// Default 5s.
	RPCTimeout time.Duration
	// Resend is how often unanswered round messages are sent again.
	// Default 100ms.
	Resend time.Duration
	// Tick is how often the round machine looks at the clock. Default 20ms.
	Tick time.Duration
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
	// MetricsAddr, when set, is the TCP address (host:port; port 0 picks
	// one) where the node serves Prometheus metrics at /metrics: ringmesh_*
	// and libp2p's series. Empty: no metrics endpoint.
	MetricsAddr string
	// NoLinkProbe turns off the link probes (LinkProbeProtocol): the node
	// advertises no link estimate and rounds run the classic ring with
	// equal segments.
	NoLinkProbe bool
	// Lock is the data dir lock, when the caller took it (LockDataDir)
	// before writing to the data dir itself; it stays the caller's to
	// release. Nil: Open takes it first thing, and the node releases it
	// when it closes.
	Lock *DataDirLock
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		Mesh:           mesh.DefaultConfig(),
		AllReduce:      allreduce.DefaultConfig(),
		MinMembers:     1,
		FormWait:       2 * time.Second,
		FormTimeout:    20 * time.Second,
		CommitTimeout:  10 * time.Second,
		RPCTimeout:     5 * time.Second,
		Resend:         100 * time.Millisecond,
		Tick:           20 * time.Millisecond,
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
	case c.CommitTimeout <= 0 || c.RPCTimeout <= 0 || c.RetryBackoff <= 0 || c.JoinPoll <= 0 || c.JoinRequestTTL <= 0 ||
		c.FormWait <= 0 || c.FormTimeout <= 0 || c.Resend <= 0 || c.Tick <= 0:
		return errors.New("node: form wait, form timeout, commit timeout, rpc timeout, resend, tick, retry backoff, join poll and join request ttl must be positive")
	case c.FormTimeout <= c.FormWait:
		return fmt.Errorf("node: form timeout %s must exceed form wait %s", c.FormTimeout, c.FormWait)
	case c.TrainerTimeout < 0:
		return errors.New("node: trainer timeout must not be negative")
	case c.Lock != nil && !c.Lock.holds(c.DataDir):
		return fmt.Errorf("node: the lock given is not one on data dir %s", c.DataDir)
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
	drv     *roundrun.Driver
	probe   *linkProber // nil with NoLinkProbe
	metrics *metrics
	api     *apiserver.Server
	// metricsSrv serves /metrics (nil without MetricsAddr).
	metricsSrv *metricsServer
	ckpt       *checkpoints
	// localRanks is how many processes the attached trainer speaks for
	// (its join's LocalRanks; 0 before a join).
	localRanks atomic.Int32
	// pub is the heartbeat payload; check compares the trainer's state
	// hashes with the other members' (statecheck.go).
	pub   payloadPub
	check *stateCheck
	// lock is the data dir lock Open took (nil when Config.Lock was given).
	lock *DataDirLock
}

// Open builds the node: the libp2p host (listening), the all-reduce and
// round protocols, and the control socket. Run starts it. It takes the data
// dir lock (unless cfg.Lock holds it) before it reads or writes anything
// else there: a second node on a data dir fails at once, saying so, without
// touching the first one's identity or incarnation.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (n *Node, err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.Mesh.DataDir = cfg.DataDir
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := privateDir(cfg.DataDir, logger); err != nil {
		return nil, err
	}
	var lock *DataDirLock
	if cfg.Lock == nil {
		if lock, err = LockDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				lock.Close()
			}
		}()
	}
	n = &Node{cfg: cfg, log: logger.With("component", "node"), metrics: newMetrics(), lock: lock}
	cfg.Mesh.Registerer = n.metrics.reg
	store, err := roundrun.OpenStore(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	m, err := mesh.Open(ctx, cfg.Mesh, logger, n.metrics)
	if err != nil {
		return nil, err
	}
	n.mesh, n.host = m, m.Host()
	result, err := roundrun.OpenResult(cfg.DataDir)
	if err != nil {
		m.Close()
		return nil, err
	}
	n.check = newStateCheck(n.host.ID(), n.log, n.metrics, func(a stateAds) {
		if err := n.setStates(a); err != nil {
			n.log.Warn("set payload", "err", err)
		}
	})
	n.tr = allreduce.NewStreamTransport(n.host, cfg.AllReduce, logger)
	n.metrics.reg.MustRegister(newLaneCollector(n.tr.LaneStats))
	reducer := allreduce.New(cfg.AllReduce, n.tr, logger, n.metrics)
	if n.drv, err = n.newDriver(store, result, reducer); err != nil {
		n.tr.Close()
		result.Close()
		m.Close()
		return nil, err
	}
	if n.ckpt, err = openCheckpoints(cfg.Checkpoint, cfg.DataDir, m, n.currentHistory, logger, n.metrics); err != nil {
		n.tr.Close()
		n.drv.Close()
		m.Close()
		return nil, err
	}
	n.metrics.reg.MustRegister(newStateCollector(n))
	if n.metricsSrv, err = listenMetrics(cfg.MetricsAddr, n.metrics.reg, logger); err != nil {
		n.ckpt.close()
		n.tr.Close()
		n.drv.Close()
		m.Close()
		return nil, err
	}
	n.api, err = apiserver.Listen(cfg.DataDir, apiBackend{n}, n.log)
	if err != nil {
		n.metricsSrv.close()
		n.ckpt.close()
		n.tr.Close()
		n.drv.Close()
		m.Close()
		return nil, err
	}
	n.host.SetStreamHandler(roundrun.Protocol, n.drv.HandleStream)
	if !cfg.NoLinkProbe {
		n.probe = newLinkProber(n, n.drv.SetLink)
		n.host.SetStreamHandler(LinkProbeProtocol, n.probe.handle)
	}
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
	g.Go(func() error { return n.drv.Run(gctx) })
	g.Go(func() error { return n.api.Serve(gctx) })
	g.Go(func() error { return n.ckpt.run(gctx, n.mesh) })
	g.Go(func() error { return n.metricsSrv.serve(gctx) })
	g.Go(func() error { return n.check.run(gctx, n) })
	if n.probe != nil {
		g.Go(func() error { return n.probe.run(gctx) })
	}
	err := g.Wait()
	n.shutdown()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

func (n *Node) shutdown() {
	n.api.Close()
	n.metricsSrv.close()
	n.host.RemoveStreamHandler(roundrun.Protocol)
	n.drv.Close() // the inbound round streams and the result buffer
	if n.probe != nil {
		n.host.RemoveStreamHandler(LinkProbeProtocol)
		n.probe.close()
	}
	n.ckpt.close()
	n.tr.Close()
	n.mesh.Close()
	n.lock.Close()
}

// privateDir creates the data dir 0700, or takes group and other access
// away from an existing one: it holds the identity key, the round state and
// the control socket, which any local process could otherwise use.
func privateDir(dir string, logger *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("node: data dir: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("node: data dir: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("node: data dir %s is not a directory", dir)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(dir, perm&0o700|0o700); err != nil {
			return fmt.Errorf("node: data dir %s is open to other users (%v) and cannot be made private: %w", dir, perm, err)
		}
		logger.Warn("data dir was open to other users; made it private (0700)", "dir", dir, "was", perm.String())
	}
	return nil
}
