package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// FetcherConfig configures a Fetcher.
type FetcherConfig struct {
	// StreamsPerProvider is how many chunk requests are in flight to each
	// provider (one stream each). 2 hides a round trip per chunk; more
	// helps only on long fat links. Default 2.
	StreamsPerProvider int
	// MaxStreamsPerPeer bounds the streams this Fetcher holds open to one
	// provider across all its concurrent fetches, manifest requests
	// included; a fetch's further workers wait for a slot (or for their
	// fetch to end). At least StreamsPerProvider. A node runs two Fetchers
	// (its own and the Replicator's): keep twice this within the
	// providers' ServerConfig.MaxStreamsPerPeer (default 8), which resets
	// the excess. Default 4.
	MaxStreamsPerPeer int
	// RequestTimeout bounds one request, including opening a stream and
	// receiving a whole chunk: allow the slowest link (4 MiB at 1 MB/s is
	// 4 s). Default 60 s.
	RequestTimeout time.Duration
	// MaxProviderFailures is how many network failures (timeouts, resets)
	// a provider may have in one fetch before it is abandoned. Default 3.
	MaxProviderFailures int
	// RateLimit bounds the fetch's ingress in bytes/s (token bucket);
	// 0 means unlimited. The Replicator sets it so background pulls never
	// starve all-reduce traffic. Default 0.
	RateLimit int64
}

// DefaultFetcherConfig returns the production defaults.
func DefaultFetcherConfig() FetcherConfig {
	return FetcherConfig{StreamsPerProvider: 2, MaxStreamsPerPeer: 4, RequestTimeout: 60 * time.Second, MaxProviderFailures: 3}
}

// LocalFetcherConfig is a preset for tests.
func LocalFetcherConfig() FetcherConfig {
	c := DefaultFetcherConfig()
	c.RequestTimeout = 20 * time.Second
	return c
}

// Validate checks the fields.
func (c FetcherConfig) Validate() error {
	switch {
	case c.StreamsPerProvider < 1:
		return fmt.Errorf("checkpoint: StreamsPerProvider %d, want at least 1", c.StreamsPerProvider)
	case c.MaxStreamsPerPeer < c.StreamsPerProvider:
		return fmt.Errorf("checkpoint: MaxStreamsPerPeer %d, want at least StreamsPerProvider %d", c.MaxStreamsPerPeer, c.StreamsPerProvider)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("checkpoint: RequestTimeout %v, want > 0", c.RequestTimeout)
	case c.MaxProviderFailures < 1:
		return fmt.Errorf("checkpoint: MaxProviderFailures %d, want at least 1", c.MaxProviderFailures)
	case c.RateLimit < 0:
		return fmt.Errorf("checkpoint: RateLimit %d, want >= 0", c.RateLimit)
	}
	return nil
}

// Progress is reported after every verified chunk.
type Progress struct {
	Root       Root
	Step       uint64
	Size       int64
	Done       int64 // bytes verified and held, resumed ones included
	Fetched    int64 // bytes fetched by this call
	Chunks     int
	ChunksDone int
	Providers  int       // providers still in use
	BadPeers   []peer.ID // providers that served bad data
}

// Result summarises a Fetch.
type Result struct {
	Root          Root
	Manifest      Manifest
	Fetched       int64 // bytes fetched and verified by this call
	ChunksFetched int
	ChunksResumed int // verified chunks already held before the call
	PerPeer       map[peer.ID]int
	// BadPeers served data that failed verification (a chunk or the
	// manifest); the node should report them (Catalog.ReportBad, scoring).
	BadPeers []peer.ID
}

// Fetcher pulls checkpoints into a Store from providers over ProtocolID.
type Fetcher struct {
	cfg     FetcherConfig
	h       host.Host
	store   *Store
	log     *slog.Logger
	metrics Metrics
	slots   *peerSlots
}

// NewFetcher returns a Fetcher. It does no I/O.
func NewFetcher(cfg FetcherConfig, h host.Host, store *Store, logger *slog.Logger, metrics Metrics) (*Fetcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Fetcher{cfg: cfg, h: h, store: store, slots: newPeerSlots(cfg.MaxStreamsPerPeer),
		log: orDiscard(logger).With("component", "checkpoint"), metrics: orNop(metrics)}, nil
}

// Fetch pulls root into the store from providers at once, more chunks
// from faster ones, verifying every chunk before writing it. Verified
// chunks of an earlier, interrupted fetch are kept and not fetched again.
// A chunk that fails verification is fetched from another provider and
// its source is listed in Result.BadPeers. Errors: ErrUnknownRoot (no
// provider knows root), ErrNoProvider, ErrHashMismatch (after every
// provider was tried), ErrDiskFull (a *NoSpaceError, counted as
// CheckpointRefused("no_space"), when the manifest's size exceeds the
// store's free space: nothing is allocated), or ctx's error. progress may
// be nil; it is called from one goroutine at a time and must not block.
func (f *Fetcher) Fetch(ctx context.Context, root Root, providers []peer.ID, progress func(Progress)) (Result, error) {
	res := Result{Root: root, PerPeer: make(map[peer.ID]int)}
	if in, ok := f.store.Stat(root); ok && in.Complete {
		res.Manifest, _ = f.store.Manifest(root)
		res.ChunksResumed = in.Chunks
		return res, nil
	}
	providers = dedupe(providers, f.h.ID())
	release, bad, err := f.openPartial(ctx, root, providers)
	res.BadPeers = bad
	if err != nil {
		return res, fmt.Errorf("checkpoint: fetch %s: %w", root.Short(), err)
	}
	defer release()
	res.Manifest, _ = f.store.Manifest(root)
	run := newFetchRun(f, root, res.Manifest, f.store.haveChunks(root), progress)
	for _, p := range bad {
		run.dead[p] = true
	}
	res.ChunksResumed = run.have
	run.start(ctx, providers)
	run.collect(&res)
	if err := run.err(ctx); err != nil {
		return res, fmt.Errorf("checkpoint: fetch %s: %w", root.Short(), err)
	}
	if err := f.store.finish(root); err != nil {
		return res, fmt.Errorf("checkpoint: fetch %s: %w", root.Short(), err)
	}
	f.log.Info("checkpoint fetched", "root", root, "step", res.Manifest.Step,
		"bytes", res.Fetched, "resumed_chunks", res.ChunksResumed, "bad_peers", len(res.BadPeers))
	return res, nil
}

func dedupe(ps []peer.ID, self peer.ID) []peer.ID {
	seen := make(map[peer.ID]bool)
	var out []peer.ID
	for _, p := range ps {
		if p != self && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// openPartial makes sure the store has an entry for root (fetching the
// manifest from the first provider that has a valid one) and pins it.
// Providers that sent a manifest not hashing to root are returned as bad.
func (f *Fetcher) openPartial(ctx context.Context, root Root, providers []peer.ID) (func(), []peer.ID, error) {
	if release, err := f.store.Pin(root); err == nil {
		return release, nil, nil
	}
	var bad []peer.ID
	badHash := false
	unknown := 0
	var lastErr error
	for _, p := range providers {
		if err := ctxErr(ctx); err != nil {
			return nil, bad, err
		}
		c := &conn{f: f, p: p}
		mb, err := c.manifest(ctx, root)
		c.close()
		if err == nil {
			var release func()
			release, err = f.store.beginPartial(root, mb)
			if err == nil {
				return release, bad, nil
			}
			if errors.Is(err, ErrDiskFull) {
				f.noteNoSpace(err)
				return nil, bad, err
			}
			if !errors.Is(err, ErrHashMismatch) && !errors.Is(err, ErrBadManifest) {
				return nil, bad, err
			}
			badHash = badHash || errors.Is(err, ErrHashMismatch)
		}
		var remote *RemoteError
		if err != nil && !errors.As(err, &remote) &&
			(errors.Is(err, ErrHashMismatch) || errors.Is(err, ErrBadManifest) || errors.Is(err, ErrBadFrame)) {
			f.metrics.BadChunk(p)
			bad = append(bad, p)
		}
		if errors.Is(err, ErrUnknownRoot) {
			unknown++
		}
		f.log.Debug("manifest request failed", "peer", p, "root", root, "err", err)
		lastErr = &PeerError{Peer: p, Err: err}
	}
	switch {
	case len(providers) > 0 && unknown == len(providers):
		return nil, bad, ErrUnknownRoot
	case badHash:
		return nil, bad, fmt.Errorf("manifest from every provider: %w (last: %w)", ErrHashMismatch, lastErr)
	case lastErr != nil:
		return nil, bad, fmt.Errorf("%w (last: %w)", ErrNoProvider, lastErr)
	}
	return nil, bad, ErrNoProvider
}

// noteNoSpace counts and logs a checkpoint refused for its size.
func (f *Fetcher) noteNoSpace(err error) {
	var ns *NoSpaceError
	if errors.As(err, &ns) {
		f.metrics.CheckpointRefused("no_space")
		f.log.Warn("checkpoint refused: does not fit", "root", ns.Root, "need", ns.Need, "free", ns.Free)
	}
}

// newLimiter returns the token bucket for cfg.RateLimit, or nil.
func (f *Fetcher) newLimiter(chunkSize uint32) *rate.Limiter {
	if f.cfg.RateLimit == 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(f.cfg.RateLimit), int(chunkSize))
}
