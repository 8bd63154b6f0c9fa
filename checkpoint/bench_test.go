package checkpoint

import (
	"context"
	"os"
	"testing"
	"time"
)

// BenchmarkFetch fetches a 256 MiB checkpoint (4 MiB chunks) from 3
// providers over loopback libp2p (TCP, Noise/TLS, yamux) into a fresh store
// each iteration, with every chunk verified and written.
func BenchmarkFetch(b *testing.B) {
	const size = 256 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var provs []*tnode
	for range 3 {
		h := newHost(b)
		n := &tnode{h: h, store: openStore(b, b.TempDir(), DefaultStoreConfig()), metrics: newCountMetrics()}
		srv, err := NewServer(DefaultServerConfig(), h, n.store, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		n.stop = runBG(b, srv.Run)
		provs = append(provs, n)
	}
	fh := newHost(b)
	link(append(hosts(provs...), fh)...)
	src, _ := writeRandom(b, size, 1)
	root := saveOn(b, src, 1, provs...)
	b.SetBytes(size)
	b.ResetTimer()
	var total time.Duration
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		st := openStore(b, dir, DefaultStoreConfig())
		f, err := NewFetcher(DefaultFetcherConfig(), fh, st, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if _, err := f.Fetch(ctx, root, ids(provs...), nil); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		b.StopTimer()
		st.Close()
		os.RemoveAll(dir) // keep disk use to one copy
		b.StartTimer()
	}
	b.ReportMetric(float64(size)*float64(b.N)/total.Seconds()/1e9, "GB/s")
}
