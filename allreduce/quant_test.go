package allreduce

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

var quantTypes = []DType{Int8, Float4}

func TestWireLen(t *testing.T) {
	cases := []struct {
		dt   DType
		n    int
		want int
	}{
		{Float32, 0, 0}, {Float32, 3, 12}, {BFloat16, 3, 6}, {Float16, 5, 10}, {DType(99), 5, 0},
		{Int8, 0, 0}, {Int8, 1, 5}, {Int8, 63, 67}, {Int8, 64, 68}, {Int8, 65, 73}, {Int8, 1000, 1000 + 4*16},
		{Float4, 0, 0}, {Float4, 1, 5}, {Float4, 2, 5}, {Float4, 3, 6}, {Float4, 64, 36}, {Float4, 65, 41},
		{Float4, 127, 36 + 4 + 32}, {Float4, 1000, 15*36 + 4 + 20},
	}
	for _, c := range cases {
		if got := c.dt.WireLen(c.n); got != c.want {
			t.Errorf("%v.WireLen(%d): got %d, want %d", c.dt, c.n, got, c.want)
		}
	}
}

func TestChunkElems(t *testing.T) {
	for _, dt := range []DType{Float32, BFloat16, Float16, Int8, Float4} {
		for _, b := range []int{MinChunkBytes, 4096 + 4, 1 << 20, MaxChunkBytes} {
			e := dt.chunkElems(b)
			if e <= 0 || dt.WireLen(e) > b {
				t.Errorf("%v.chunkElems(%d) = %d: %d wire bytes", dt, b, e, dt.WireLen(e))
			}
			step := 1
			if dt == Int8 || dt == Float4 {
				step = quantBlock
			}
			if e%step != 0 || dt.WireLen(e+step) <= b {
				t.Errorf("%v.chunkElems(%d) = %d: not the most whole blocks of %d", dt, b, e, step)
			}
		}
	}
	if got := Float32.chunkElems(1 << 20); got != 1<<18 {
		t.Errorf("float32 chunk: got %d elements, want %d", got, 1<<18)
	}
}

func TestRoundEven(t *testing.T) {
	for _, c := range []struct {
		v    float32
		want int32
	}{{0, 0}, {0.5, 0}, {1.5, 2}, {2.5, 2}, {-0.5, 0}, {-1.5, -2}, {126.5, 126}, {127.49, 127}, {-127, -127}, {0.49999997, 0}, {3.7, 4}} {
		if got := roundEven(c.v); got != c.want {
			t.Errorf("roundEven(%v): got %d, want %d", c.v, got, c.want)
		}
	}
}

func TestE2M1(t *testing.T) {
	// Every code's value encodes to that code; midpoints go to the even code.
	for c, v := range e2m1Values {
		if got := e2m1(v); got != byte(c) {
			t.Errorf("e2m1(%v): got %d, want %d", v, got, c)
		}
	}
	for _, c := range []struct {
		v    float32
		want byte
	}{{0.25, 0}, {0.75, 2}, {1.25, 2}, {1.75, 4}, {2.5, 4}, {3.5, 6}, {5, 6}, {6.00001, 7}, {-5, 14}, {-0.1, 8}, {0.2500001, 1}, {4.9999995, 6}, {5.0000005, 7}} {
		if got := e2m1(c.v); got != c.want {
			t.Errorf("e2m1(%v): got %d, want %d", c.v, got, c.want)
		}
	}
	// Against a search for the nearest value.
	r := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		v := float32(r.Float64()*12 - 6)
		got := e2m1Values[e2m1(v)]
		best := float32(math.Inf(1))
		for _, g := range e2m1Values {
			best = min(best, float32(math.Abs(float64(v-g))))
		}
		if d := float32(math.Abs(float64(v - got))); d != best || math.Signbit(float64(got)) != math.Signbit(float64(v)) {
			t.Fatalf("e2m1(%v) = %v: %v away, the nearest is %v away", v, got, d, best)
		}
	}
}

// TestQuantGolden pins the block layout: scale, then codes.
func TestQuantGolden(t *testing.T) {
	x := []float32{1, -0.5, 0.25, 0, 2, -2}
	cases := []struct {
		dt   DType
		want string
	}{
		// scale 2/127 (0x3c810204); 1/scale is 63.5: 1 -> 63.5 ties
		// to 64, -0.5 -> -32, 0.25 -> 16, 0, 2 -> 127, -2 -> -127.
		{Int8, "0402813c" + "40e010007f81"},
		// scale 2/6 (0x3eaaaaab); 1/scale rounds to 3: 1 -> 3 (code
		// 5), -0.5 -> -1.5 (11), 0.25 -> 0.75 ties to 1 (2), 0, 2 -> 6
		// (7), -2 -> -6 (15); low nibble first.
		{Float4, "abaaaa3e" + "b5" + "02" + "f7"},
	}
	for _, c := range cases {
		w := make([]byte, c.dt.WireLen(len(x)))
		encode(c.dt, w, x, 1)
		if got := hex.EncodeToString(w); got != c.want {
			t.Errorf("%v: got %s, want %s", c.dt, got, c.want)
		}
	}
}

// quantBound is the largest error quantizing v may give in a block whose
// scale is scale: half a step for Int8, a quarter of max(|v|, scale) for
// Float4 (a half step of E2M1 is at most a quarter of the value, and
// 0.25 under 1), plus float32 rounding.
func quantBound(dt DType, v, scale float32) float64 {
	s, a := float64(scale), math.Abs(float64(v))
	if dt == Int8 {
		return s/2*(1+0x1p-20) + a*0x1p-22
	}
	return max(a, s)/4*(1+0x1p-20) + a*0x1p-22
}

// qmax is the largest code value of a block format.
func qmax(dt DType) float64 {
	if dt == Int8 {
		return 127
	}
	return 6
}

func TestQuantRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	gen := map[string]func(i int) float32{
		"gauss":    func(int) float32 { return float32(r.NormFloat64()) },
		"uniform":  func(int) float32 { return float32(r.Float64()*2 - 1) },
		"outlier":  func(i int) float32 { return float32(r.NormFloat64() * (1 + 999*float64(i%37/36))) },
		"small":    func(int) float32 { return float32(r.NormFloat64() * 1e-30) },
		"zeros":    func(int) float32 { return 0 },
		"constant": func(int) float32 { return -3 },
		"wide":     func(int) float32 { return float32(math.Ldexp(r.Float64(), r.IntN(60)-30)) },
	}
	for _, dt := range quantTypes {
		for _, name := range []string{"gauss", "uniform", "outlier", "small", "zeros", "constant", "wide"} {
			for _, n := range []int{1, 2, 63, 64, 65, 1001} {
				t.Run(fmt.Sprintf("%v/%s/%d", dt, name, n), func(t *testing.T) {
					x := make([]float32, n)
					for i := range x {
						x[i] = gen[name](i)
					}
					w := make([]byte, dt.WireLen(n))
					encode(dt, w, x, 1)
					got := make([]float32, n)
					gather(dt, got, w)
					bb := dt.WireLen(quantBlock)
					for lo := 0; lo < n; lo += quantBlock {
						blk := x[lo:min(lo+quantBlock, n)]
						scale := math.Float32frombits(binary.LittleEndian.Uint32(w[lo/quantBlock*bb:]))
						am := 0.0
						for _, v := range blk {
							am = max(am, math.Abs(float64(v)))
						}
						if want := float32(am) / float32(qmax(dt)); scale != want {
							t.Fatalf("block at %d: got scale %v, want %v", lo, scale, want)
						}
						for i, v := range blk {
							e := math.Abs(float64(v) - float64(got[lo+i]))
							if b := quantBound(dt, v, scale); e > b {
								t.Fatalf("element %d: %v decodes as %v: error %v over %v (scale %v)", lo+i, v, got[lo+i], e, b, scale)
							}
						}
					}
				})
			}
		}
	}
}

// TestQuantKernels checks that a finished chunk's values are its wire
// bytes decoded (what every other member reads), that accumulate adds
// within a quantization step and that a scaled encode equals encoding
// the scaled values.
func TestQuantKernels(t *testing.T) {
	for _, dt := range quantTypes {
		for _, n := range []int{1, 64, 130} {
			t.Run(fmt.Sprintf("%v/%d", dt, n), func(t *testing.T) {
				a, b := testInputs(uint64(n), 2, n)[0], testInputs(uint64(n), 2, n)[1]
				w := make([]byte, dt.WireLen(n))
				encode(dt, w, a, 0.5)
				half := make([]float32, n)
				for i, v := range a {
					half[i] = v * 0.5
				}
				w2 := make([]byte, len(w))
				encode(dt, w2, half, 1)
				if !bytes.Equal(w, w2) {
					t.Fatalf("encode(x, 0.5): got %x, want encode(x/2) %x", w, w2)
				}
				p := make([]float32, n)
				gather(dt, p, w)
				accumulate(dt, w, b, 2)
				sum := make([]float32, n)
				gather(dt, sum, w)
				for i := range sum {
					if e := math.Abs(float64(sum[i] - (p[i] + 2*b[i]))); e > 3*0.25/qmax(dt)*4 {
						t.Fatalf("accumulate %d: got %v, want about %v", i, sum[i], p[i]+2*b[i])
					}
				}
				out, back := make([]float32, n), make([]float32, n)
				finish(dt, out, a, w, 1, 0.25)
				gather(dt, back, w)
				for i := range out {
					if math.Float32bits(out[i]) != math.Float32bits(back[i]) {
						t.Fatalf("finish %d: got %v, its wire bytes decode as %v", i, out[i], back[i])
					}
				}
			})
		}
	}
}

// TestQuantNonFinite: a NaN or an infinity makes its whole block NaN
// (and only its block), through every kernel.
func TestQuantNonFinite(t *testing.T) {
	inf := float32(math.Inf(1))
	for _, dt := range quantTypes {
		for _, bad := range []float32{quantNaN, inf, -inf} {
			t.Run(fmt.Sprintf("%v/%v", dt, bad), func(t *testing.T) {
				const n = 3 * quantBlock
				x := testInputs(9, 1, n)[0]
				x[quantBlock+5] = bad
				w := make([]byte, dt.WireLen(n))
				encode(dt, w, x, 1)
				out := make([]float32, n)
				checkNaNBlock := func(what string) {
					t.Helper()
					for i, v := range out {
						inBlock := i/quantBlock == 1
						if isNaN := v != v; isNaN != inBlock {
							t.Fatalf("%s: element %d is %v (block 1 only should be NaN)", what, i, v)
						}
					}
				}
				gather(dt, out, w)
				checkNaNBlock("encode")
				accumulate(dt, w, testInputs(10, 1, n)[0], 1)
				gather(dt, out, w)
				checkNaNBlock("accumulate")
				finish(dt, out, testInputs(11, 1, n)[0], w, 1, 0.5)
				checkNaNBlock("finish")
			})
		}
	}
	// An overflowing sum is infinite in float32: the block goes NaN.
	w := make([]byte, Int8.WireLen(2))
	encode(Int8, w, []float32{math.MaxFloat32, 1}, 1)
	accumulate(Int8, w, []float32{math.MaxFloat32, 1}, 1)
	out := make([]float32, 2)
	gather(Int8, out, w)
	if out[0] == out[0] || out[1] == out[1] {
		t.Fatalf("overflow: got %v, want NaN NaN", out)
	}
}

// TestQuantTiny: a block whose scale would be subnormal is sent as zeros.
func TestQuantTiny(t *testing.T) {
	for _, dt := range quantTypes {
		limit := float32(qmax(dt)) * 0x1p-126
		x := []float32{limit * 0.99, -limit * 0.5, 1e-45}
		w := make([]byte, dt.WireLen(len(x)))
		encode(dt, w, x, 1)
		out := []float32{1, 1, 1}
		gather(dt, out, w)
		if binary.LittleEndian.Uint32(w) != 0 || out[0] != 0 || out[1] != 0 || out[2] != 0 {
			t.Errorf("%v: %v encodes as %x, decodes as %v; want scale 0 and zeros", dt, x, w, out)
		}
		x[0] = limit
		encode(dt, w, x, 1)
		gather(dt, out, w)
		if out[0] != limit {
			t.Errorf("%v: %v decodes as %v, want %v", dt, limit, out[0], limit)
		}
	}
}

// TestQuantFrameLength: a frame one byte short or long of a chunk's wire
// length is rejected before it is decoded.
func TestQuantFrameLength(t *testing.T) {
	for _, dt := range quantTypes {
		for _, n := range []int{1, 64, 65, 999} {
			want := dt.WireLen(n)
			for _, l := range []int{want - 1, want + 1, 0} {
				var b bytes.Buffer
				_ = WriteFrame(&b, make([]byte, l))
				if err := readExact(&b, make([]byte, want)); !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrFrameTooLarge) {
					t.Errorf("%v n=%d: a %d-byte frame: got %v, want a rejection", dt, n, l, err)
				}
			}
		}
	}
}

// FuzzQuantDecode feeds the block decoders garbage: a frame is read as
// the receiver reads a chunk (exact length or an error), and whatever
// passes decodes, accumulates and finishes without a panic, the finished
// values equal to the finished bytes decoded.
func FuzzQuantDecode(f *testing.F) {
	w := make([]byte, Int8.WireLen(70))
	encode(Int8, w, testInputs(1, 1, 70)[0], 1)
	var fr bytes.Buffer
	_ = WriteFrame(&fr, w)
	f.Add(fr.Bytes(), uint16(70), false)
	f.Add([]byte{0, 0, 0, 5, 0xff, 0xff, 0xff, 0x7f, 0x80}, uint16(1), true)
	f.Add([]byte{0, 0, 0, 9}, uint16(3), true)
	f.Fuzz(func(t *testing.T, b []byte, n uint16, fp4 bool) {
		dt := Int8
		if fp4 {
			dt = Float4
		}
		elems := int(n%1024) + 1
		buf := make([]byte, dt.WireLen(elems))
		if err := readExact(bytes.NewReader(b), buf); err != nil {
			return
		}
		out, local := make([]float32, elems), make([]float32, elems)
		gather(dt, out, buf)
		accumulate(dt, buf, out, 1)
		finish(dt, out, local, buf, 1, 0.5)
		back := make([]float32, elems)
		gather(dt, back, buf)
		for i := range out {
			if math.Float32bits(out[i]) != math.Float32bits(back[i]) {
				t.Fatalf("element %d: finished %v, its bytes decode as %v", i, out[i], back[i])
			}
		}
	})
}
