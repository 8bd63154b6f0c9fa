package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sync/errgroup"

	"github.com/ringmesh/ringmesh/checkpoint"
	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// CheckpointConfig configures the node's checkpoint store, its gossip,
// serving, fetching and background replication.
type CheckpointConfig struct {
	// Store: chunk size, retention (Keep is --keep-checkpoints, default 3)
	// and verification on open.
	Store checkpoint.StoreConfig
	// Server bounds the streams served to fetching peers.
	Server checkpoint.ServerConfig
	// Catalog: re-announcement interval and provider TTL.
	Catalog checkpoint.CatalogConfig
	// Fetch configures the fetches that trainers and the CLI ask for
	// (checkpoint_fetch, join). Its RateLimit (bytes/s, 0 = unlimited,
	// the default) bounds their ingress.
	Fetch checkpoint.FetcherConfig
	// Replicator: Replicas is R (--replicas, default 2): a new checkpoint is
	// pulled in the background until R live nodes hold it, at RateLimit
	// (default 32 MiB/s) so it never starves all-reduce traffic.
	Replicator checkpoint.ReplicatorConfig
	// JoinTimeout bounds how long a join that wants state waits for the
	// checkpoint of its entry step to be announced (a member's trainer saves
	// it when told SaveCheckpoint). It must cover one training step plus the
	// save. The fetch that follows is not bounded by it. Default 60s.
	JoinTimeout time.Duration
}

// DefaultCheckpointConfig returns the production defaults.
func DefaultCheckpointConfig() CheckpointConfig {
	return CheckpointConfig{
		Store:       checkpoint.DefaultStoreConfig(),
		Server:      checkpoint.DefaultServerConfig(),
		Catalog:     checkpoint.DefaultCatalogConfig(),
		Fetch:       checkpoint.DefaultFetcherConfig(),
		Replicator:  checkpoint.DefaultReplicatorConfig(),
		JoinTimeout: 60 * time.Second,
	}
}

// LocalCheckpointConfig is a preset for tests: small chunks, fast
// re-announcements and replication checks, no replication rate limit.
func LocalCheckpointConfig() CheckpointConfig {
	return CheckpointConfig{
		Store:       checkpoint.LocalStoreConfig(),
		Server:      checkpoint.LocalServerConfig(),
		Catalog:     checkpoint.LocalCatalogConfig(),
		Fetch:       checkpoint.LocalFetcherConfig(),
		Replicator:  checkpoint.LocalReplicatorConfig(),
		JoinTimeout: 30 * time.Second,
	}
}

// Validate checks every part.
func (c CheckpointConfig) Validate() error {
	for _, err := range []error{c.Store.Validate(), c.Server.Validate(), c.Catalog.Validate(),
		c.Fetch.Validate(), c.Replicator.Validate()} {
		if err != nil {
			return fmt.Errorf("node: checkpoint config: %w", err)
		}
	}
	if c.JoinTimeout <= 0 {
		return errors.New("node: checkpoint join timeout must be positive")
	}
	return nil
}

// checkpoints is the node's checkpoint machinery: the store under
// checkpoint.StoreDir(DataDir), the gossip catalog over the mesh's
// checkpoint topic, the fetch server, a fetcher for API calls and the
// background replicator.
type checkpoints struct {
	cfg     CheckpointConfig
	log     *slog.Logger
	dataDir string
	store   *checkpoint.Store
	server  *checkpoint.Server
	catalog *checkpoint.Catalog
	fetcher *checkpoint.Fetcher
	repl    *checkpoint.Replicator
	ps      *pubsub.PubSub
	topicID string
	topic   *pubsub.Topic
	sub     *pubsub.Subscription

	mu       sync.Mutex
	nextID   uint64
	inflight map[uint64]*localapi.FetchProgress

	// base: set by reform, the state of the re-formed mesh's first step.
	base atomic.Pointer[reformBase]
	// history reads the agreed history: which checkpoints count.
	history func() history
}

// openCheckpoints opens the store and builds the components; nothing runs
// until run.
func openCheckpoints(cfg CheckpointConfig, dataDir string, m *mesh.Mesh, hist func() history, logger *slog.Logger, met checkpoint.Metrics) (c *checkpoints, err error) {
	c = &checkpoints{cfg: cfg, dataDir: dataDir, log: logger.With("component", "node"), history: hist,
		ps: m.PubSub(), topicID: m.TopicName("checkpoint"), inflight: map[uint64]*localapi.FetchProgress{}}
	if c.store, err = checkpoint.OpenStore(checkpoint.StoreDir(dataDir), cfg.Store, logger); err != nil {
		return nil, fmt.Errorf("node: checkpoint store: %w", err)
	}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	validate := func(_ context.Context, _ peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
		if !m.Allowed(msg.GetFrom()) {
			return pubsub.ValidationReject // the allow list holds on every topic
		}
		if _, err := checkpoint.ValidateAnnouncement(msg.Data, msg.GetFrom()); err != nil {
			return pubsub.ValidationReject
		}
		return pubsub.ValidationAccept
	}
	if err = c.ps.RegisterTopicValidator(c.topicID, validate); err != nil {
		return nil, fmt.Errorf("node: checkpoint topic validator: %w", err)
	}
	if c.topic, err = c.ps.Join(c.topicID); err != nil {
		return nil, fmt.Errorf("node: join checkpoint topic: %w", err)
	}
	if c.sub, err = c.topic.Subscribe(); err != nil {
		return nil, fmt.Errorf("node: subscribe checkpoint topic: %w", err)
	}
	h := m.Host()
	if c.server, err = checkpoint.NewServer(cfg.Server, h, c.store, logger, met); err != nil {
		return nil, err
	}
	if c.catalog, err = checkpoint.NewCatalog(cfg.Catalog, h.ID(), c.store, &gossip{c.topic, c.sub}, logger, met); err != nil {
		return nil, err
	}
	if c.fetcher, err = checkpoint.NewFetcher(cfg.Fetch, h, c.store, logger, met); err != nil {
		return nil, err
	}
	members := func() []peer.ID { return m.View().Alive() }
	rcfg := cfg.Replicator
	// Replicate only what members of the agreed list announce at steps the
	// mesh has reached: nothing is allocated for anyone else's claims.
	rcfg.Trust = func(author peer.ID, step uint64) bool { return hist().trustAuthor(author, step) }
	if c.repl, err = checkpoint.NewReplicator(rcfg, h, c.store, c.catalog, members, logger, met); err != nil {
		return nil, err
	}
	return c, nil
}

// run serves, gossips and replicates until ctx is done.
func (c *checkpoints) run(ctx context.Context, m *mesh.Mesh) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.server.Run(ctx) })
	g.Go(func() error { return c.catalog.Run(ctx) })
	g.Go(func() error { return c.repl.Run(ctx) })
	g.Go(func() error { c.watchMembers(ctx, m.Watch(ctx)); return nil })
	return g.Wait()
}

// newcomerAnnounces is how many times the newest local checkpoint is
// announced after a member appears, and newcomerDelay the first wait
// (doubling): a newcomer's subscription to the checkpoint topic reaches
// gossipsub shortly after its first heartbeat.
const (
	newcomerAnnounces = 2
	newcomerDelay     = time.Second
)

// watchMembers follows the mesh view. Members declared dead or gone are
// removed as providers, so fetches and replication stop counting on them
// (one that comes back announces itself again). When a member appears, the
// newest local checkpoint is announced again so the newcomer learns its
// providers without waiting for the periodic re-announcement.
func (c *checkpoints) watchMembers(ctx context.Context, views <-chan mesh.View) {
	gone, alive := map[peer.ID]bool{}, map[peer.ID]bool{}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	left, delay := 0, newcomerDelay
	for {
		select {
		case <-ctx.Done():
			return
		case v, ok := <-views:
			if !ok {
				return
			}
			if c.noteView(v, gone, alive) {
				left, delay = newcomerAnnounces, newcomerDelay
				timer.Reset(delay)
			}
		case <-timer.C:
			if info, ok := c.store.Latest(); ok {
				if err := c.catalog.Announce(ctx, info.Root); err != nil && ctx.Err() == nil {
					c.log.Debug("announce checkpoint to newcomer", "root", info.Root, "err", err)
				}
			}
			if left--; left > 0 {
				delay *= 2
				timer.Reset(delay)
			}
		}
	}
}

// noteView removes gone members as providers and reports whether a member
// became alive.
func (c *checkpoints) noteView(v mesh.View, gone, alive map[peer.ID]bool) (newcomer bool) {
	for _, m := range v.Members {
		switch {
		case m.ID == v.Self:
		case m.State == mesh.Dead || m.State == mesh.Left:
			delete(alive, m.ID)
			if !gone[m.ID] {
				gone[m.ID] = true
				c.log.Info("checkpoint provider gone", "peer", m.ID, "state", m.State)
				c.catalog.RemoveProvider(m.ID)
			}
		case m.State == mesh.Alive:
			delete(gone, m.ID)
			if !alive[m.ID] {
				alive[m.ID] = true
				newcomer = true
			}
		}
	}
	return newcomer
}

// close releases the topic and the store. Call after run has returned.
func (c *checkpoints) close() {
	if c.sub != nil {
		c.sub.Cancel()
	}
	if c.topic != nil {
		c.topic.Close()
	}
	c.ps.UnregisterTopicValidator(c.topicID)
	c.store.Close()
}

// gossip adapts the mesh's checkpoint topic to checkpoint.Announcer.
type gossip struct {
	topic *pubsub.Topic
	sub   *pubsub.Subscription
}

var _ checkpoint.Announcer = (*gossip)(nil)

func (g *gossip) Publish(ctx context.Context, data []byte) error {
	return g.topic.Publish(ctx, data)
}

// Next returns the message's signed author, not the relaying peer.
func (g *gossip) Next(ctx context.Context) ([]byte, peer.ID, error) {
	msg, err := g.sub.Next(ctx)
	if err != nil {
		return nil, "", err
	}
	return msg.Data, msg.GetFrom(), nil
}
