package checkpoint_test

import (
	"context"
	"log/slog"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sync/errgroup"

	"github.com/ringmesh/ringmesh/checkpoint"
)

// Example shows how node composes the package: one store, a server, a
// catalog over the gossip adapter, a replicator; saves announce, joins
// fetch the newest complete checkpoint.
func Example() {
	var (
		ctx     = context.Background()
		h       host.Host            // the mesh's libp2p host
		ann     checkpoint.Announcer // adapter over the mesh's checkpoint topic
		members func() []peer.ID     // live members from the mesh view
		log     = slog.Default()
		dataDir = "/var/lib/ringmesh"
	)
	if h == nil {
		return // (illustration only)
	}
	store, err := checkpoint.OpenStore(checkpoint.StoreDir(dataDir), checkpoint.DefaultStoreConfig(), log)
	if err != nil {
		return
	}
	defer store.Close()
	srv, _ := checkpoint.NewServer(checkpoint.DefaultServerConfig(), h, store, log, nil)
	cat, _ := checkpoint.NewCatalog(checkpoint.DefaultCatalogConfig(), h.ID(), store, ann, log, nil)
	rep, _ := checkpoint.NewReplicator(checkpoint.DefaultReplicatorConfig(), h, store, cat, members, log, nil)
	fetcher, _ := checkpoint.NewFetcher(checkpoint.DefaultFetcherConfig(), h, store, log, nil)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(ctx) })
	g.Go(func() error { return cat.Run(ctx) })
	g.Go(func() error { return rep.Run(ctx) })

	// Save (trainer -> node): store, then announce.
	if _, root, err := store.Put(ctx, "/tmp/state.pt", 1200); err == nil {
		_ = cat.Announce(ctx, root)
	}
	// Join: fetch the newest complete checkpoint and hand it over.
	if k, ok := cat.LatestComplete(); ok && !k.Local {
		res, err := fetcher.Fetch(ctx, k.Root, k.Providers, func(p checkpoint.Progress) { /* progress bar */ })
		for _, bad := range res.BadPeers {
			cat.ReportBad(k.Root, bad)
		}
		if err == nil {
			_ = store.Export(ctx, k.Root, "/tmp/joined.pt")
			_ = cat.Announce(ctx, k.Root)
		}
	}
	_ = g.Wait()
}
