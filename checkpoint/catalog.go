package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sync/errgroup"
)

// CatalogConfig configures a Catalog.
type CatalogConfig struct {
	// ReannounceInterval is how often every complete local checkpoint is
	// announced again, so newcomers learn all providers and stale ones
	// expire elsewhere. More often costs gossip bandwidth (about 100 bytes
	// per checkpoint per node). Default 30 s.
	ReannounceInterval time.Duration
	// ProviderTTL is how long a provider is believed without a fresh
	// announcement. Must exceed ReannounceInterval; default 3x it (90 s).
	ProviderTTL time.Duration
	// MaxEntries bounds the checkpoints tracked. Beyond it, the oldest
	// announcement (by arrival, never by step) of the author tracking the
	// most entries is forgotten first, so a flood costs its authors their
	// own entries, not others'. Default 256.
	MaxEntries int
	// MaxPerAuthor bounds the checkpoints one author (the first peer to
	// announce a root) has tracked; beyond it that author's oldest
	// announcement is forgotten. It must cover the checkpoints an honest
	// node holds (StoreConfig.Keep). Default 32; at most MaxEntries.
	MaxPerAuthor int
}

// DefaultCatalogConfig returns the production defaults.
func DefaultCatalogConfig() CatalogConfig {
	return CatalogConfig{ReannounceInterval: 30 * time.Second, ProviderTTL: 90 * time.Second, MaxEntries: 256, MaxPerAuthor: 32}
}

// LocalCatalogConfig is a preset for tests: fast re-announcements.
func LocalCatalogConfig() CatalogConfig {
	return CatalogConfig{ReannounceInterval: 200 * time.Millisecond, ProviderTTL: 30 * time.Second, MaxEntries: 64, MaxPerAuthor: 16}
}

// Validate checks the fields.
func (c CatalogConfig) Validate() error {
	switch {
	case c.ReannounceInterval <= 0:
		return fmt.Errorf("checkpoint: ReannounceInterval %v, want > 0", c.ReannounceInterval)
	case c.ProviderTTL <= c.ReannounceInterval:
		return fmt.Errorf("checkpoint: ProviderTTL %v must exceed ReannounceInterval %v", c.ProviderTTL, c.ReannounceInterval)
	case c.MaxEntries < 1:
		return fmt.Errorf("checkpoint: MaxEntries %d, want at least 1", c.MaxEntries)
	case c.MaxPerAuthor < 1 || c.MaxPerAuthor > c.MaxEntries:
		return fmt.Errorf("checkpoint: MaxPerAuthor %d outside [1, MaxEntries=%d]", c.MaxPerAuthor, c.MaxEntries)
	}
	return nil
}

// Known is a checkpoint the Catalog knows of.
type Known struct {
	Step  uint64
	Root  Root
	Size  int64
	RunID string // "" for none
	// Author is the first peer heard announcing it (self for a local one
	// never announced by another).
	Author peer.ID
	// Providers are the live remote peers announcing it (never self).
	Providers []peer.ID
	// Local reports whether the local store holds it complete.
	Local bool
}

// Holders is the number of nodes known to hold it, self included.
func (k Known) Holders() int {
	if k.Local {
		return len(k.Providers) + 1
	}
	return len(k.Providers)
}

type known struct {
	step      uint64
	size      int64
	runID     string
	author    peer.ID               // the first to announce it; its quota holds the entry
	arrival   uint64                // order of the first announcement
	providers map[peer.ID]time.Time // last announcement
}

// Catalog tracks known checkpoints and their providers from announcements,
// and announces the local store's complete checkpoints.
type Catalog struct {
	cfg     CatalogConfig
	self    peer.ID
	store   *Store
	ann     Announcer
	log     *slog.Logger
	metrics Metrics
	now     func() time.Time

	updates chan struct{}

	mu       sync.Mutex
	known    map[Root]*known
	authored map[peer.ID]int // entries per author
	arrivals uint64
}

// NewCatalog returns a Catalog for the node self. It does no I/O.
func NewCatalog(cfg CatalogConfig, self peer.ID, store *Store, ann Announcer, logger *slog.Logger, metrics Metrics) (*Catalog, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil || ann == nil {
		return nil, errors.New("checkpoint: catalog needs a store and an announcer")
	}
	return &Catalog{
		cfg: cfg, self: self, store: store, ann: ann,
		log:      orDiscard(logger).With("component", "checkpoint"),
		metrics:  orNop(metrics),
		now:      time.Now,
		updates:  make(chan struct{}, 1),
		known:    make(map[Root]*known),
		authored: make(map[peer.ID]int),
	}, nil
}

// Run receives announcements and re-announces local checkpoints until ctx
// is done or the Announcer fails.
func (c *Catalog) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.receive(ctx) })
	g.Go(func() error { return c.reannounce(ctx) })
	err := g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (c *Catalog) receive(ctx context.Context) error {
	for {
		data, from, err := c.ann.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("checkpoint: announcements: %w", err)
		}
		if err := c.Handle(data, from); err != nil {
			// Counted in Metrics; Debug so a flood cannot flood the log.
			c.log.Debug("announcement rejected", "peer", from, "err", err)
		}
	}
}

func (c *Catalog) reannounce(ctx context.Context) error {
	t := time.NewTicker(c.cfg.ReannounceInterval)
	defer t.Stop()
	for {
		for _, in := range c.store.List() {
			if !in.Complete {
				continue
			}
			if err := c.Announce(ctx, in.Root); err != nil && ctx.Err() == nil {
				c.log.Warn("re-announce failed", "root", in.Root, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Announce publishes that this node provides root, which the local store
// must hold complete.
func (c *Catalog) Announce(ctx context.Context, root Root) error {
	in, ok := c.store.Stat(root)
	if !ok || !in.Complete {
		return fmt.Errorf("checkpoint: announce %s: %w", root.Short(), ErrIncomplete)
	}
	a := Announcement{Step: in.Step, Root: root, Size: in.Size, Provider: c.self, RunID: in.RunID}
	b, err := a.Encode()
	if err != nil {
		return err
	}
	c.record(a)
	if err := c.ann.Publish(ctx, b); err != nil {
		return fmt.Errorf("checkpoint: announce %s: %w", root.Short(), err)
	}
	return nil
}

// Handle validates one gossip message authored by from and records it.
// Malformed, forged and conflicting announcements are rejected, counted and
// never recorded.
func (c *Catalog) Handle(data []byte, from peer.ID) error {
	a, err := ValidateAnnouncement(data, from)
	switch {
	case errors.Is(err, ErrForgedAnnouncement):
		c.metrics.AnnouncementRejected("forged")
		return err
	case err != nil:
		c.metrics.AnnouncementRejected("malformed")
		return err
	}
	if from == c.self {
		return nil // our own, recorded when published
	}
	if err := c.record(a); err != nil {
		c.metrics.AnnouncementRejected("conflicting")
		return err
	}
	return nil
}

func (c *Catalog) record(a Announcement) error {
	c.mu.Lock()
	k, ok := c.known[a.Root]
	if ok && (k.step != a.Step || k.size != a.Size || k.runID != a.RunID) {
		c.mu.Unlock()
		return fmt.Errorf("%w: root %s announced as step %d size %d run %q, known as step %d size %d run %q",
			ErrBadAnnouncement, a.Root.Short(), a.Step, a.Size, a.RunID, k.step, k.size, k.runID)
	}
	if !ok {
		c.arrivals++
		k = &known{step: a.Step, size: a.Size, runID: a.RunID, author: a.Provider, arrival: c.arrivals,
			providers: make(map[peer.ID]time.Time)}
		c.known[a.Root] = k
		c.authored[a.Provider]++
		c.evictLocked(a.Provider)
	}
	_, wasProvider := k.providers[a.Provider]
	k.providers[a.Provider] = c.now()
	c.mu.Unlock()
	if !ok || !wasProvider {
		c.notify()
	}
	return nil
}

// evictLocked enforces the caps after author's new entry: author's
// oldest announcements beyond MaxPerAuthor, then, beyond MaxEntries, the
// oldest of whichever author has the most. The newest entry is never the
// one evicted (an author over a cap of at least 1 has an older one).
func (c *Catalog) evictLocked(author peer.ID) {
	for c.authored[author] > c.cfg.MaxPerAuthor {
		if !c.forgetOldestLocked(func(k *known) bool { return k.author == author }) {
			break
		}
	}
	for len(c.known) > c.cfg.MaxEntries {
		most := 0
		for _, n := range c.authored {
			most = max(most, n)
		}
		if !c.forgetOldestLocked(func(k *known) bool { return c.authored[k.author] == most }) {
			break
		}
	}
}

// forgetOldestLocked forgets the earliest-arrived entry that match
// selects; false if none does.
func (c *Catalog) forgetOldestLocked(match func(*known) bool) bool {
	var oldest Root
	var first *known
	for r, k := range c.known {
		if match(k) && (first == nil || k.arrival < first.arrival) {
			oldest, first = r, k
		}
	}
	if first == nil {
		return false
	}
	c.forgetLocked(oldest)
	return true
}

func (c *Catalog) forgetLocked(root Root) {
	k, ok := c.known[root]
	if !ok {
		return
	}
	delete(c.known, root)
	if c.authored[k.author]--; c.authored[k.author] <= 0 {
		delete(c.authored, k.author)
	}
}

func (c *Catalog) notify() {
	select {
	case c.updates <- struct{}{}:
	default:
	}
}

// Updates signals (latest wins, never blocking the Catalog) that a new
// checkpoint or provider was learnt.
func (c *Catalog) Updates() <-chan struct{} { return c.updates }

// RemoveProvider forgets p as a provider of everything (the node calls it
// when membership declares p dead or gone).
func (c *Catalog) RemoveProvider(p peer.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.known {
		delete(k.providers, p)
	}
}

// ReportBad forgets p as a provider of root (it served bad data or did not
// hold it) until p announces root again.
func (c *Catalog) ReportBad(root Root, p peer.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.known[root]; ok {
		delete(k.providers, p)
	}
}

// Providers returns the live remote providers of root.
func (c *Catalog) Providers(root Root) []peer.ID {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.known[root]
	if !ok {
		return nil
	}
	return c.liveLocked(k)
}

func (c *Catalog) liveLocked(k *known) []peer.ID {
	var out []peer.ID
	now := c.now()
	for p, seen := range k.providers {
		if p != c.self && now.Sub(seen) <= c.cfg.ProviderTTL {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// List returns every known checkpoint (announced or held complete
// locally), newest step first. Step, size and run ID of a checkpoint held
// locally are the store's (verified), not what was announced.
func (c *Catalog) List() []Known {
	local := make(map[Root]Info)
	for _, in := range c.store.List() {
		if in.Complete {
			local[in.Root] = in
		}
	}
	c.mu.Lock()
	out := make([]Known, 0, len(c.known)+len(local))
	for r, k := range c.known {
		if _, isLocal := local[r]; isLocal {
			continue // below, with the providers
		}
		out = append(out, Known{Step: k.step, Root: r, Size: k.size, RunID: k.runID, Author: k.author, Providers: c.liveLocked(k)})
	}
	for r, in := range local {
		var providers []peer.ID
		author := c.self
		if k, ok := c.known[r]; ok {
			providers, author = c.liveLocked(k), k.author
		}
		out = append(out, Known{Step: in.Step, Root: r, Size: in.Size, RunID: in.RunID, Author: author, Providers: providers, Local: true})
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Step != out[j].Step {
			return out[i].Step > out[j].Step
		}
		return out[i].Root.String() < out[j].Root.String()
	})
	return out
}

// ListRun is List restricted to the checkpoints of the run runID; "" selects
// those announced or stored without a run ID.
func (c *Catalog) ListRun(runID string) []Known {
	all := c.List()
	out := all[:0]
	for _, k := range all {
		if k.RunID == runID {
			out = append(out, k)
		}
	}
	return out
}

// LatestComplete returns the newest checkpoint that some live node (self
// included) holds complete.
func (c *Catalog) LatestComplete() (Known, bool) {
	for _, k := range c.List() {
		if k.Holders() > 0 {
			return k, true
		}
	}
	return Known{}, false
}
