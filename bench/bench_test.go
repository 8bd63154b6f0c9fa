package bench

import (
	"slices"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	for _, c := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{nil, 0},
		{ms(5), 5 * time.Millisecond},
		{ms(9, 1, 5), 5 * time.Millisecond},
		{ms(4, 1, 3, 2), 2500 * time.Microsecond},
	} {
		in := slices.Clone(c.in)
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		if !slices.Equal(in, c.in) {
			t.Errorf("median reordered its argument: %v", c.in)
		}
	}
}

// TestAllReduceResultFigures: algbw is size over the median time, busbw
// algbw x 2(n-1)/n, as nccl-tests define them.
func TestAllReduceResultFigures(t *testing.T) {
	r := newARResult(4, 64<<20, "float32", []time.Duration{time.Second, 2 * time.Second, 500 * time.Millisecond})
	if r.MedianS != 1 || r.Iters != 3 {
		t.Fatalf("median %v over %d iters; want 1 s over 3", r.MedianS, r.Iters)
	}
	if want := float64(64<<20) / 1e9; r.AlgBW != want || r.BusBW != want*1.5 {
		t.Errorf("algbw %v busbw %v; want %v and %v", r.AlgBW, r.BusBW, want, want*1.5)
	}
}

func TestNodeArgs(t *testing.T) {
	a := nodeArgs(3, true, true)
	for _, want := range []string{"--no-mdns", "--no-dht", "--fast-detect", "--insecure-open-mesh", "/ip4/127.0.0.1/tcp/0"} {
		if !slices.Contains(a, want) {
			t.Errorf("nodeArgs: %v lacks %s", a, want)
		}
	}
	if i := slices.Index(a, "--min-members"); i < 0 || a[i+1] != "3" {
		t.Errorf("nodeArgs: %v; want --min-members 3", a)
	}
	if slices.Contains(nodeArgs(3, false, false), "--insecure-open-mesh") {
		t.Error("a private bench mesh got --insecure-open-mesh")
	}
}
