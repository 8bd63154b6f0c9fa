package allreduce

import (
	"fmt"
	"math"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestKernels(t *testing.T) {
	local := []float32{1, 2, 3, -4, 5}
	for _, dt := range []DType{Float32, BFloat16, Float16} {
		t.Run(dt.String(), func(t *testing.T) {
			wire := make([]byte, dt.WireLen(len(local)))
			encode(dt, wire, local, 2)
			got := make([]float32, len(local))
			gather(dt, got, wire)
			for i, v := range local {
				if got[i] != 2*v {
					t.Fatalf("encode/gather %d: got %v, want %v", i, got[i], 2*v)
				}
			}
			accumulate(dt, wire, local, 3) // 2v + 3v, in wire
			gather(dt, got, wire)
			for i, v := range local {
				if got[i] != 5*v {
					t.Fatalf("accumulate %d: got %v, want %v", i, got[i], 5*v)
				}
			}
			encode(dt, wire, local, 2)
			finish(dt, got, local, wire, 1, 0.5) // (2v + v) / 2
			back := make([]float32, len(local))
			gather(dt, back, wire)
			for i, v := range local {
				if want := roundTrip(dt, 1.5*v); got[i] != want || back[i] != want {
					t.Fatalf("finish %d: got %v (wire %v), want %v", i, got[i], back[i], want)
				}
			}
		})
	}
}

func TestParse(t *testing.T) {
	for _, d := range []DType{Float32, BFloat16, Float16, Int8, Float4} {
		if got, err := ParseDType(d.String()); err != nil || got != d {
			t.Errorf("ParseDType(%q): got %v, %v", d.String(), got, err)
		}
	}
	for s, d := range map[string]DType{"bf16": BFloat16, "i8": Int8, "fp4": Float4, "e2m1": Float4} {
		if got, err := ParseDType(s); err != nil || got != d {
			t.Errorf("ParseDType(%q): got %v, %v; want %v", s, got, err, d)
		}
	}
	for _, o := range []Op{Sum, Mean, WeightedMean} {
		if got, err := ParseOp(o.String()); err != nil || got != o {
			t.Errorf("ParseOp(%q): got %v, %v", o.String(), got, err)
		}
	}
	if _, err := ParseDType("int4"); err == nil {
		t.Errorf("ParseDType(int4): got no error")
	}
	if _, err := ParseOp("max"); err == nil {
		t.Errorf("ParseOp(max): got no error")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{DefaultConfig(), LocalConfig()} {
		if err := c.Validate(); err != nil {
			t.Fatalf("got %v, want a valid preset", err)
		}
	}
	bad := []func(*Config){
		func(c *Config) { c.ChunkBytes = 0 },
		func(c *Config) { c.ChunkBytes = MinChunkBytes + 2 },
		func(c *Config) { c.ChunkBytes = MaxChunkBytes + 4 },
		func(c *Config) { c.Lanes = 0 },
		func(c *Config) { c.Lanes = MaxLanes + 1 },
		func(c *Config) { c.FrameTimeout = 0 },
		func(c *Config) { c.StartTimeout = 0 },
		func(c *Config) { c.HoldTimeout = 0 },
		func(c *Config) { c.MaxHeld = 0 },
		func(c *Config) { c.NoticeGrace = -1 },
	}
	for i, f := range bad {
		c := DefaultConfig()
		f(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("case %d: got no error for %+v", i, c)
		}
	}
}

func TestMembersHash(t *testing.T) {
	ids := testIDs(t, 3)
	a := Round{Ring: ids}.MembersHash()
	b := Round{Ring: []peer.ID{ids[1], ids[0], ids[2]}}.MembersHash()
	if a == b {
		t.Fatalf("reordered ring: got the same hash")
	}
	if a != (Round{Mesh: "other", Step: 9, Ring: ids}).MembersHash() {
		t.Fatalf("hash depends on more than the ring")
	}
}

func BenchmarkKernels(b *testing.B) {
	const n = 1 << 18
	local := make([]float32, n)
	out := make([]float32, n)
	for i := range local {
		local[i] = float32(math.Sin(float64(i)))
	}
	for _, dt := range []DType{Float32, BFloat16, Float16, Int8, Float4} {
		wire := make([]byte, dt.WireLen(n))
		encode(dt, wire, local, 1)
		b.Run(fmt.Sprintf("accumulate/%v", dt), func(b *testing.B) {
			b.SetBytes(n * 4)
			for range b.N {
				accumulate(dt, wire, local, 0)
			}
		})
		b.Run(fmt.Sprintf("gather/%v", dt), func(b *testing.B) {
			b.SetBytes(n * 4)
			for range b.N {
				gather(dt, out, wire)
			}
		})
		b.Run(fmt.Sprintf("finish/%v", dt), func(b *testing.B) {
			b.SetBytes(n * 4)
			for range b.N {
				finish(dt, out, local, wire, 1, 0.5)
			}
		})
		b.Run(fmt.Sprintf("encode/%v", dt), func(b *testing.B) {
			b.SetBytes(n * 4)
			for range b.N {
				encode(dt, wire, local, 0.5)
			}
		})
	}
}
