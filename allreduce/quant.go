package allreduce

import (
	"encoding/binary"
	"math"
)

// Block-quantized wire formats (Int8, Float4). A chunk of n elements is
// cut into blocks of quantBlock elements counted from the chunk's start
// (the last block may be shorter), so every chunk decodes on its own.
// Each block is a little-endian float32 scale followed by its codes:
//
//	Int8    scale = max|x| / 127; one int8 per element, q = x/scale
//	        rounded to nearest, ties to even (never -128)
//	Float4  scale = max|x| / 6; one E2M1 code per element (sign bit 3,
//	        then 2 exponent and 1 mantissa bits: 0, 0.5, 1, 1.5, 2, 3,
//	        4, 6), x/scale rounded to nearest, ties to the even code;
//	        two per byte, the even element in the low nibble, a short
//	        block's last high nibble 0
//
// An element decodes as code value * scale, one float32 multiply, so
// every member reads the same bytes as the same float32 values.
//
// A block holding a NaN or an infinity is sent as a NaN scale and zero
// codes: every element of it decodes as NaN, and so does every later sum
// of it, so a round with a non-finite input ends with NaN in (at least)
// the blocks that held it, on every member. A block whose largest
// magnitude is below qmax*2^-126 (about 1.5e-36 for Int8) is sent as
// scale 0: all zeros, so that a scale is never subnormal.

// quantBlock is the elements per block of the block formats: a power of
// two, so a float32 scale costs 1/16 byte per element (Int8 sends 1.0625
// bytes per element, Float4 0.5625).
const quantBlock = 64

// quantNaN is the scale of a block that held a NaN or an infinity.
var quantNaN = math.Float32frombits(0x7fc00000)

// e2m1Values are the Float4 codes' values (code 8 is -0).
var e2m1Values = [16]float32{0, 0.5, 1, 1.5, 2, 3, 4, 6, float32(math.Copysign(0, -1)), -0.5, -1, -1.5, -2, -3, -4, -6}

// quantWireLen is the wire bytes of n elements in a block format whose
// codes take bits bits.
func quantWireLen(n, bits int) int {
	blocks := (n + quantBlock - 1) / quantBlock
	full := n / quantBlock
	last := n - full*quantBlock
	return 4*blocks + full*quantBlock*bits/8 + (last*bits+7)/8
}

// blockScale returns the scale of block x for a format whose largest code
// value is qmax, and its reciprocal; ok is false when every code is 0:
// then scale is NaN for a block with a NaN or an infinity and 0 for a
// block whose largest magnitude is under qmax*2^-126.
func blockScale(x []float32, qmax float32) (scale, inv float32, ok bool) {
	var m uint32
	for _, v := range x {
		m = max(m, math.Float32bits(v)&0x7fffffff)
	}
	a := math.Float32frombits(m)
	switch {
	case m >= 0x7f800000:
		return quantNaN, 0, false
	case a < qmax*0x1p-126:
		return 0, 0, false
	}
	scale = a / qmax
	return scale, 1 / scale, true
}

// roundEven rounds v (|v| < 2^22) to the nearest integer, ties to even:
// adding 1.5*2^23 leaves the integer in the low mantissa bits.
func roundEven(v float32) int32 {
	return int32(math.Float32bits(v+0x1.8p23)) - 0x4b400000
}

// e2m1 is the Float4 code nearest v (|v| at most 6 and a rounding),
// ties to the even code.
func e2m1(v float32) byte {
	u := math.Float32bits(v)
	a := u & 0x7fffffff
	// Under 2 the codes are the multiples of 0.5: round 2a (adding
	// 1.5*2^22 leaves it in the low bits). From 2 on, round the mantissa
	// to one bit; exponent and mantissa then count up from code 4. Both
	// are computed and one is masked in: no branch on the data.
	lo := math.Float32bits(math.Float32frombits(a)+0x1.8p22) - 0x4ac00000
	hi := (a+0x1fffff+(a>>22)&1)>>22 - 252
	under := uint32(int32(a-0x40000000) >> 31) // all ones when a < 2
	return byte(u>>28)&8 | byte(lo&under|hi&^under)
}

// quantize encodes the block x (1 to quantBlock elements) into w.
func quantize(dt DType, w []byte, x []float32) {
	if dt == Int8 {
		scale, inv, ok := blockScale(x, 127)
		binary.LittleEndian.PutUint32(w, math.Float32bits(scale))
		q := w[4 : 4+len(x)]
		if !ok {
			clear(q)
			return
		}
		for i, v := range x {
			q[i] = byte(roundEven(v * inv))
		}
		return
	}
	scale, inv, ok := blockScale(x, 6)
	binary.LittleEndian.PutUint32(w, math.Float32bits(scale))
	q := w[4 : 4+(len(x)+1)/2]
	if !ok {
		clear(q)
		return
	}
	pairs := x[:len(x)&^1]
	for i := 0; i < len(pairs); i += 2 {
		q[i/2] = e2m1(pairs[i]*inv) | e2m1(pairs[i+1]*inv)<<4
	}
	if len(x)%2 == 1 {
		q[len(q)-1] = e2m1(x[len(x)-1] * inv)
	}
}

// dequantize decodes the block in w into out (1 to quantBlock elements).
func dequantize(dt DType, out []float32, w []byte) {
	scale := math.Float32frombits(binary.LittleEndian.Uint32(w))
	if dt == Int8 {
		q := w[4 : 4+len(out)]
		for i, c := range q {
			out[i] = float32(int8(c)) * scale
		}
		return
	}
	var vals [16]float32
	for c, v := range e2m1Values {
		vals[c] = v * scale
	}
	q := w[4 : 4+(len(out)+1)/2]
	pairs := out[:len(out)&^1]
	for i := 0; i < len(pairs); i += 2 {
		b := q[i/2]
		pairs[i] = vals[b&15]
		pairs[i+1] = vals[b>>4]
	}
	if len(out)%2 == 1 {
		out[len(out)-1] = vals[q[len(q)-1]&15]
	}
}

// The chunk kernels of the block formats; see kernels.go for what each
// does. They walk the chunk a block at a time through a float32 block on
// the stack.

func encodeQuant(dt DType, wire []byte, src []float32, scale float32) {
	var t [quantBlock]float32
	bb := dt.WireLen(quantBlock)
	for lo := 0; lo < len(src); lo += quantBlock {
		x := src[lo:min(lo+quantBlock, len(src))]
		if scale != 1 {
			b := t[:len(x)]
			for i, v := range x {
				b[i] = v * scale
			}
			x = b
		}
		quantize(dt, wire[lo/quantBlock*bb:], x)
	}
}

func gatherQuant(dt DType, out []float32, wire []byte) {
	bb := dt.WireLen(quantBlock)
	for lo := 0; lo < len(out); lo += quantBlock {
		dequantize(dt, out[lo:min(lo+quantBlock, len(out))], wire[lo/quantBlock*bb:])
	}
}

func accumulateQuant(dt DType, wire []byte, local []float32, scale float32) {
	var t [quantBlock]float32
	bb := dt.WireLen(quantBlock)
	for lo := 0; lo < len(local); lo += quantBlock {
		l := local[lo:min(lo+quantBlock, len(local))]
		w, b := wire[lo/quantBlock*bb:], t[:len(l)]
		dequantize(dt, b, w)
		addScaled(b, l, scale)
		quantize(dt, w, b)
	}
}

func finishQuant(dt DType, out, local []float32, wire []byte, scale, post float32) {
	var t [quantBlock]float32
	bb := dt.WireLen(quantBlock)
	local = local[:len(out)]
	for lo := 0; lo < len(out); lo += quantBlock {
		hi := min(lo+quantBlock, len(out))
		w, b := wire[lo/quantBlock*bb:], t[:hi-lo]
		dequantize(dt, b, w)
		for i, v := range local[lo:hi] {
			b[i] = (b[i] + scale*v) * post
		}
		quantize(dt, w, b)
		dequantize(dt, out[lo:hi], w)
	}
}
