package allreduce

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// benchConfig is DefaultConfig with RINGMESH_BENCH_LANES and
// RINGMESH_BENCH_CHUNK (bytes) overrides, for tuning runs compared with
// benchstat.
func benchConfig(b *testing.B) Config {
	cfg := DefaultConfig()
	if v := os.Getenv("RINGMESH_BENCH_LANES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatal(err)
		}
		cfg.Lanes = n
	}
	if v := os.Getenv("RINGMESH_BENCH_CHUNK"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatal(err)
		}
		cfg.ChunkBytes = n
	}
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	return cfg
}

// BenchmarkStreamAllReduce measures a 64 MiB float32 all-reduce (float32,
// bfloat16, int8 or float4 on the wire) between n real libp2p hosts (TCP
// + TLS, p2pconf options) in this process, as nccl-tests does: algbw =
// bytes / time, busbw = algbw * 2(n-1)/n, from the median iteration. All
// hosts share this machine's cores.
func BenchmarkStreamAllReduce(b *testing.B) {
	const size = 64 << 20
	for _, n := range []int{2, 4} {
		for _, dt := range []DType{Float32, BFloat16, Int8, Float4} {
			b.Run(fmt.Sprintf("n=%d/%v", n, dt), func(b *testing.B) {
				benchRound(b, n, size/4, dt)
			})
		}
	}
}

func benchRound(b *testing.B, n, elems int, dt DType) {
	cfg := benchConfig(b)
	hs := newHosts(b, n)
	ids, rs := streamRing(b, cfg, hs)
	src := make([][]float32, n)
	dst := make([][]float32, n)
	for i := range src {
		src[i] = make([]float32, elems)
		for j := range src[i] {
			src[i][j] = float32(i + 1)
		}
		dst[i] = make([]float32, elems)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	step := uint64(0)
	once := func() time.Duration {
		step++
		round := Round{Mesh: "bench", Step: step, Ring: ids}
		start := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range rs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = rs[i].AllReduce(ctx, ids[i], round, src[i], dst[i], Options{Wire: dt, Op: Sum})
			}()
		}
		wg.Wait()
		d := time.Since(start)
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		return d
	}
	once() // warm-up: connections, windows, pools
	want := float64(n * (n + 1) / 2)
	for _, got := range []float32{dst[0][0], dst[n-1][elems-1]} {
		// Exact but for the block formats' scale (max/127, max/6).
		if math.Abs(float64(got)-want) > want*1e-6 {
			b.Fatalf("got %v, want %v", got, want)
		}
	}
	b.SetBytes(int64(elems * 4))
	b.ResetTimer()
	cpu0 := cpuTime(b)
	times := make([]time.Duration, 0, b.N)
	for range b.N {
		times = append(times, once())
	}
	b.StopTimer()
	// CPU seconds (user + system, every host in the process) per
	// all-reduce: the cost that bounds throughput on a shared machine, and
	// steadier than wall time when other work competes for the cores.
	b.ReportMetric((cpuTime(b)-cpu0).Seconds()/float64(b.N), "cpu_s/op")
	slices.Sort(times)
	med := times[len(times)/2].Seconds()
	algbw := float64(elems*4) / med / 1e9
	b.ReportMetric(med, "median_s")
	b.ReportMetric(algbw, "algbw_GBps")
	b.ReportMetric(algbw*2*float64(n-1)/float64(n), "busbw_GBps")
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
