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

// TestFloorModel: the floor of a round grows with the bytes each member
// moves, 2*wire*(n-1)/n, and the mesh secret adds its cipher.
func TestFloorModel(t *testing.T) {
	f := Floor{GCMBytesPerCPUS: 1e9, XSalsaBytesPerCPUS: 1e9, TCPCPUSPerByte: 1e-9, AddBytesPerCPUS: 1e9}
	// n=2, 1 GB: W = 1e9 per member; 2W/GCM + W*TCP + 0.5e9/add = 2+1+0.5 s;
	// two members: 7 s with TLS, +2*2 s with the secret's XSalsa20 on
	// streams, -2*2 s in plaintext.
	if got := f.RoundCPU(2, 1e9, 1e9, CipherTLS); got != 7 {
		t.Errorf("TLS n=2: %v, want 7", got)
	}
	if got := f.RoundCPU(2, 1e9, 1e9, CipherTLSXSalsa); got != 11 {
		t.Errorf("private streams n=2: %v, want 11", got)
	}
	if got := f.RoundCPU(2, 1e9, 1e9, CipherNone); got != 3 {
		t.Errorf("plaintext n=2: %v, want 3", got)
	}
	if half := f.RoundCPU(2, 5e8, 1e9, CipherTLS); half != 4 {
		t.Errorf("bfloat16 wire n=2: %v, want 4 (half the wire bytes, the same adds)", half)
	}
	if f.RoundCPU(1, 1e9, 1e9, CipherTLSXSalsa) != 0 {
		t.Error("a ring of one moves nothing")
	}
}

// TestMeasureFloor: every part measures a positive rate on this machine.
func TestMeasureFloor(t *testing.T) {
	f, err := MeasureFloor(50 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !(f.GCMBytesPerCPUS > 0 && f.XSalsaBytesPerCPUS > 0 && f.TCPCPUSPerByte > 0 && f.AddBytesPerCPUS > 0) {
		t.Errorf("floor %+v: want every part positive", f)
	}
}

func TestTrainConfigValidate(t *testing.T) {
	ok := TrainConfig{Speeds: []float64{1, 2}, SampleDelay: time.Millisecond, Batch: 8, Steps: 40, SyncEvery: 10, OuterLR: 0.7}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if got := ok.rounds(); got != 4 {
		t.Errorf("40 steps, H=10: %d rounds, want 4", got)
	}
	for name, mut := range map[string]func(*TrainConfig){
		"one trainer":   func(c *TrainConfig) { c.Speeds = []float64{1} },
		"zero speed":    func(c *TrainConfig) { c.Speeds = []float64{1, 0} },
		"batch":         func(c *TrainConfig) { c.Batch = 1 },
		"delay":         func(c *TrainConfig) { c.SampleDelay = 0 },
		"3 rounds":      func(c *TrainConfig) { c.Steps = 39 },
		"late":          func(c *TrainConfig) { c.Late = 2 },
		"outer lr":      func(c *TrainConfig) { c.OuterLR = 0 },
		"wire":          func(c *TrainConfig) { c.Wire = "nope" },
		"every step, 3": func(c *TrainConfig) { c.SyncEvery, c.Steps = 0, 3 },
	} {
		c := ok
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want an error", name)
		}
	}
	every := ok
	every.SyncEvery, every.OuterLR = 0, 0
	if err := every.Validate(); err != nil {
		t.Errorf("every-step config without an outer lr: %v", err)
	}
}
