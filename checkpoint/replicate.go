package checkpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ReplicatorConfig configures a Replicator.
type ReplicatorConfig struct {
	// Replicas is R: the Replicator pulls a checkpoint when fewer than R
	// live nodes hold it. Default 2.
	Replicas int
	// Window is how many of the newest known checkpoints are kept
	// replicated; older ones are left to retention. Default 1.
	Window int
	// RateLimit bounds background pulls in bytes/s (token bucket) so they
	// never starve all-reduce traffic. Default 32 MiB/s (about a quarter
	// of 1 Gbit/s); 0 means unlimited.
	RateLimit int64
	// CheckInterval is how often replication is re-evaluated besides on
	// every new announcement. Default 10 s.
	CheckInterval time.Duration
	// Patience: a checkpoint still under-replicated this long after it was
	// first seen so lets one more node (the next closest to its root) pull
	// it, per Patience elapsed, in case a chosen node is stuck. Default 60 s.
	Patience time.Duration
	// Fetch configures the pulls; its RateLimit is replaced by RateLimit.
	Fetch FetcherConfig
	// Trust, when set, is asked before anything is requested or allocated
	// for a checkpoint: whether the provider author (the signed author of
	// its announcement) may be replicated from, for a checkpoint of step.
	// Only trusted providers are fetched from; a checkpoint that no
	// trusted provider announces is not pulled (counted once as
	// CheckpointRefused("untrusted")) and is asked about again at the next
	// evaluation. It must be safe for concurrent use and must not block.
	// nil trusts every provider.
	Trust func(author peer.ID, step uint64) bool
}

// DefaultReplicatorConfig returns the production defaults.
func DefaultReplicatorConfig() ReplicatorConfig {
	return ReplicatorConfig{Replicas: 2, Window: 1, RateLimit: 32 << 20, CheckInterval: 10 * time.Second,
		Patience: 60 * time.Second, Fetch: DefaultFetcherConfig()}
}

// LocalReplicatorConfig is a preset for tests: fast checks, no rate limit.
func LocalReplicatorConfig() ReplicatorConfig {
	c := DefaultReplicatorConfig()
	c.RateLimit, c.CheckInterval, c.Patience, c.Fetch = 0, 100*time.Millisecond, 2*time.Second, LocalFetcherConfig()
	return c
}

// Validate checks the fields.
func (c ReplicatorConfig) Validate() error {
	switch {
	case c.Replicas < 1:
		return fmt.Errorf("checkpoint: Replicas %d, want at least 1", c.Replicas)
	case c.Window < 1:
		return fmt.Errorf("checkpoint: Window %d, want at least 1", c.Window)
	case c.RateLimit < 0:
		return fmt.Errorf("checkpoint: RateLimit %d, want >= 0", c.RateLimit)
	case c.CheckInterval <= 0 || c.Patience <= 0:
		return fmt.Errorf("checkpoint: CheckInterval %v and Patience %v must be > 0", c.CheckInterval, c.Patience)
	}
	return c.Fetch.Validate()
}

// Replicator pulls new checkpoints in the background until R nodes hold
// them. Which nodes pull is deterministic: the live members whose hashed
// peer IDs are closest (XOR) to the root, so not every node pulls every
// checkpoint; when a chosen node dies it leaves the member list and the
// next closest takes over.
type Replicator struct {
	cfg     ReplicatorConfig
	self    peer.ID
	store   *Store
	catalog *Catalog
	fetcher *Fetcher
	members func() []peer.ID
	log     *slog.Logger
	metrics Metrics
	now     func() time.Time

	firstSeen map[Root]time.Time // owned by Run
	refused   map[Root]refusal   // owned by Run: why a checkpoint is not pulled
}

// refusal is why the Replicator does not pull a checkpoint: counted once
// when it starts, forgotten when the checkpoint is admitted, held by
// enough nodes, or no longer listed by the catalog.
type refusal struct {
	reason string // "untrusted" or "no_space"
	need   int64  // no_space: the bytes it needs (manifest size if known)
}

// NewReplicator returns a Replicator for the node h. members returns the
// live mesh members (self may be included); it must not block. It does no
// I/O.
func NewReplicator(cfg ReplicatorConfig, h host.Host, store *Store, catalog *Catalog, members func() []peer.ID, logger *slog.Logger, metrics Metrics) (*Replicator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	fc := cfg.Fetch
	fc.RateLimit = cfg.RateLimit
	f, err := NewFetcher(fc, h, store, logger, metrics)
	if err != nil {
		return nil, err
	}
	return &Replicator{cfg: cfg, self: h.ID(), store: store, catalog: catalog, fetcher: f, members: members,
		log: orDiscard(logger).With("component", "checkpoint"), metrics: orNop(metrics),
		now: time.Now, firstSeen: make(map[Root]time.Time), refused: make(map[Root]refusal)}, nil
}

// Run evaluates replication on every catalog update and every
// CheckInterval, pulling (one checkpoint at a time) what this node was
// chosen for, until ctx is done.
func (r *Replicator) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.catalog.Updates():
		case <-t.C:
		}
		for _, k := range r.toPull() {
			r.pull(ctx, k)
			if ctx.Err() != nil {
				return nil
			}
		}
	}
}

// toPull returns the checkpoints in the window that this node should pull,
// each with its trusted providers only. Checkpoints that no trusted
// provider announces take no place in the window, so untrusted
// announcements of high steps cannot crowd out the newest real one.
func (r *Replicator) toPull() []Known {
	listed := make(map[Root]bool)
	var known []Known
	for _, k := range r.catalog.List() {
		if k.Holders() == 0 {
			continue
		}
		listed[k.Root] = true
		if !k.Local && len(r.trusted(k)) == 0 {
			r.refuse(k, refusal{reason: "untrusted"})
			continue
		}
		known = append(known, k)
	}
	known = known[:min(len(known), r.cfg.Window)]
	now := r.now()
	var out []Known
	seen := make(map[Root]bool)
	for _, k := range known {
		seen[k.Root] = true
		if k.Local || k.Holders() >= r.cfg.Replicas || len(k.Providers) == 0 {
			delete(r.firstSeen, k.Root)
			delete(r.refused, k.Root)
			continue
		}
		first, ok := r.firstSeen[k.Root]
		if !ok {
			first = now
			r.firstSeen[k.Root] = now
		}
		need := r.cfg.Replicas - k.Holders() + int(now.Sub(first)/r.cfg.Patience)
		if !Chosen(k.Root, r.self, r.members(), k.Providers, need) {
			continue
		}
		if k, ok := r.admit(k); ok {
			out = append(out, k)
		}
	}
	for root := range r.firstSeen {
		if !seen[root] {
			delete(r.firstSeen, root)
		}
	}
	for root := range r.refused {
		if !listed[root] {
			delete(r.refused, root)
		}
	}
	return out
}

// trusted returns the providers of k that the Trust hook accepts.
func (r *Replicator) trusted(k Known) []peer.ID {
	if r.cfg.Trust == nil {
		return k.Providers
	}
	return slices.DeleteFunc(slices.Clone(k.Providers), func(p peer.ID) bool { return !r.cfg.Trust(p, k.Step) })
}

// admit checks, before anything is requested or allocated for k, that a
// trusted provider announces it and that it fits in the store's free
// space. It returns k with only its trusted providers.
func (r *Replicator) admit(k Known) (Known, bool) {
	trusted := r.trusted(k)
	if len(trusted) == 0 {
		r.refuse(k, refusal{reason: "untrusted"})
		return k, false
	}
	need := k.Size
	if prev, ok := r.refused[k.Root]; ok && prev.reason == "no_space" {
		need = max(need, prev.need) // the manifest said more than the announcement
	}
	if err := r.store.checkFree(k.Root, need); err != nil {
		r.refuse(k, refusal{reason: "no_space", need: need})
		return k, false
	}
	delete(r.refused, k.Root)
	k.Providers = trusted
	return k, true
}

// refuse records why k is not pulled, counting and logging it when the
// reason is new.
func (r *Replicator) refuse(k Known, why refusal) {
	if prev, ok := r.refused[k.Root]; ok && prev.reason == why.reason {
		r.refused[k.Root] = why
		return
	}
	r.refused[k.Root] = why
	r.metrics.CheckpointRefused(why.reason)
	level := slog.LevelWarn
	if why.reason == "untrusted" {
		level = slog.LevelDebug // counted; Debug so a flood cannot flood the log
	}
	r.log.Log(context.Background(), level, "not replicating checkpoint",
		"root", k.Root, "step", k.Step, "size", k.Size, "reason", why.reason)
}

func (r *Replicator) pull(ctx context.Context, k Known) {
	r.metrics.ReplicationStarted()
	r.log.Info("replicating checkpoint", "root", k.Root, "step", k.Step, "providers", len(k.Providers))
	res, err := r.fetcher.Fetch(ctx, k.Root, k.Providers, nil)
	for _, p := range res.BadPeers {
		r.catalog.ReportBad(k.Root, p)
	}
	var ns *NoSpaceError
	if errors.As(err, &ns) {
		// Counted by the Fetcher; not tried again while it does not fit.
		r.refused[k.Root] = refusal{reason: "no_space", need: ns.Need}
	}
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("replication failed", "root", k.Root, "err", err)
		}
		if errors.Is(err, ErrUnknownRoot) {
			for _, p := range k.Providers {
				r.catalog.ReportBad(k.Root, p)
			}
		}
		return
	}
	if err := r.catalog.Announce(ctx, k.Root); err != nil && ctx.Err() == nil {
		r.log.Warn("announce replica failed", "root", k.Root, "err", err)
	}
}

// Chosen reports whether self is among the need members, other than the
// holders, closest to root by XOR distance of SHA-256(peer ID). Every
// node computes the same ranking from the same member list.
func Chosen(root Root, self peer.ID, members, holders []peer.ID, need int) bool {
	if need <= 0 {
		return false
	}
	skip := make(map[peer.ID]bool, len(holders))
	for _, h := range holders {
		skip[h] = true
	}
	cands := []peer.ID{self}
	for _, m := range members {
		if m != self && !skip[m] {
			cands = append(cands, m)
		}
	}
	dist := func(p peer.ID) []byte {
		h := sha256.Sum256([]byte(p))
		for i := range h {
			h[i] ^= root[i]
		}
		return h[:]
	}
	sort.Slice(cands, func(i, j int) bool { return bytes.Compare(dist(cands[i]), dist(cands[j])) < 0 })
	for _, c := range cands[:min(need, len(cands))] {
		if c == self {
			return true
		}
	}
	return false
}
