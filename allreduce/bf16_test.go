package allreduce

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// bf16Inputs returns n float32 values mixing random magnitudes with the
// cases rounding can get wrong: NaNs (quiet, signalling, with payloads),
// infinities, zeros, subnormals, the largest finite values, and exact ties
// between two bfloat16 values.
func bf16Inputs(r *rand.Rand, n int) []float32 {
	special := []uint32{
		0x7fc00000, 0xffc00001, 0x7f800001, 0x7fbfffff, // NaNs
		0x7f800000, 0xff800000, 0, 0x80000000, // infinities, zeros
		0x00000001, 0x807fffff, 0x00400000, // subnormals
		0x7f7fffff, 0xff7fffff, 0x7f7f8000, // near the top (rounds to inf)
		0x3f808000, 0x3f818000, 0xbf808000, // ties to even, down and up
		0x3f807fff, 0x3f808001, 0x3f80ffff,
	}
	out := make([]float32, n)
	for i := range out {
		switch r.IntN(4) {
		case 0:
			out[i] = math.Float32frombits(special[r.IntN(len(special))])
		case 1:
			out[i] = math.Float32frombits(r.Uint32()) // any bits
		default:
			out[i] = float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(20)-10)))
		}
	}
	return out
}

func bf16Wire(r *rand.Rand, n int) []uint16 {
	w := make([]uint16, n)
	for i, v := range bf16Inputs(r, n) {
		w[i] = uint16(math.Float32bits(v) >> 16) // every bit pattern, NaNs too
	}
	return w
}

// bf16NaN reports whether h is a bfloat16 NaN.
func bf16NaN(h uint16) bool { return h&0x7f80 == 0x7f80 && h&0x7f != 0 }

// requireSameU16 compares bfloat16 bits; two NaNs match (which NaN a sum of
// two NaNs gives depends on operand order, which the compiler picks).
func requireSameU16(t *testing.T, what string, got, want []uint16) {
	t.Helper()
	for i := range want {
		if got[i] != want[i] && !(bf16NaN(got[i]) && bf16NaN(want[i])) {
			t.Fatalf("%s: element %d: vector %#04x, scalar %#04x", what, i, got[i], want[i])
		}
	}
}

func requireSameF32(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		g, w := got[i], want[i]
		if math.Float32bits(g) != math.Float32bits(w) && !(g != g && w != w) {
			t.Fatalf("%s: element %d: vector %#08x, scalar %#08x", what, i, math.Float32bits(got[i]), math.Float32bits(want[i]))
		}
	}
}

// The vector bfloat16 kernels give the scalar kernels' bits for every
// length (tails included), unaligned slices and scale/post factors.
func TestBF16KernelsMatchScalar(t *testing.T) {
	if !useAVX2 {
		t.Skip("no vector bfloat16 kernels on this CPU/build (amd64 with AVX2 only); the scalar ones are used")
	}
	r := rand.New(rand.NewPCG(7, 7))
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 31, 64, 67, 1000, 4099} {
		for _, off := range []int{0, 1, 3} {
			for _, sp := range [][2]float32{{1, 1}, {0.25, 1}, {3, 1.0 / 3}, {1, 0.5}} {
				scale, post := sp[0], sp[1]
				t.Run(fmt.Sprintf("n=%d/off=%d/scale=%v/post=%v", n, off, scale, post), func(t *testing.T) {
					src := bf16Inputs(r, n+off)[off:]
					wire := bf16Wire(r, n+off)[off:]

					got, want := make([]uint16, n), make([]uint16, n)
					encodeBF16(got, src, scale)
					encodeBF16Generic(want, src, scale)
					requireSameU16(t, "encode", got, want)

					copy(got, wire)
					copy(want, wire)
					accumulateBF16(got, src, scale)
					accumulateBF16Generic(want, src, scale)
					requireSameU16(t, "accumulate", got, want)

					copy(got, wire)
					copy(want, wire)
					outGot, outWant := make([]float32, n), make([]float32, n)
					finishBF16(outGot, src, got, scale, post)
					finishBF16Generic(outWant, src, want, scale, post)
					requireSameU16(t, "finish wire", got, want)
					requireSameF32(t, "finish out", outGot, outWant)

					// out aliasing local, as AllReduce allows.
					a, b := append([]float32(nil), src...), append([]float32(nil), src...)
					copy(got, wire)
					copy(want, wire)
					finishBF16(a, a, got, scale, post)
					finishBF16Generic(b, b, want, scale, post)
					requireSameF32(t, "finish in place", a, b)

					gatherBF16(outGot, wire)
					gatherBF16Generic(outWant, wire)
					requireSameF32(t, "gather", outGot, outWant)
				})
			}
		}
	}
}

// Exhaustive over every bfloat16 input of gather and over the rounding of
// every float32 whose low half is one of the interesting patterns.
func TestBF16KernelsExhaustive(t *testing.T) {
	if !useAVX2 {
		t.Skip("no vector bfloat16 kernels on this CPU/build (amd64 with AVX2 only)")
	}
	w := make([]uint16, 1<<16)
	for i := range w {
		w[i] = uint16(i)
	}
	got, want := make([]float32, len(w)), make([]float32, len(w))
	gatherBF16(got, w)
	gatherBF16Generic(want, w)
	requireSameF32(t, "gather", got, want)

	lows := []uint32{0, 1, 0x7fff, 0x8000, 0x8001, 0xffff}
	src := make([]float32, 0, len(w)*len(lows))
	for hi := range 1 << 16 {
		for _, lo := range lows {
			src = append(src, math.Float32frombits(uint32(hi)<<16|lo))
		}
	}
	g, h := make([]uint16, len(src)), make([]uint16, len(src))
	encodeBF16(g, src, 1)
	encodeBF16Generic(h, src, 1)
	requireSameU16(t, "encode", g, h)
}
