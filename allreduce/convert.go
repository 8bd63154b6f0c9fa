package allreduce

import (
	"math"
	"sync"
	"unsafe"
)

// Element payloads travel little-endian (native on every platform Go
// commonly targets), so float32 frames are the buffers' own bytes.
// nativeLittleEndian is checked once per AllReduce call.
var nativeLittleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// f32Bytes views a float32 slice as its bytes (no copy).
func f32Bytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
}

// bytesF32 views b (4-byte aligned, len a multiple of 4) as float32s.
func bytesF32(b []byte) []float32 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// bytesU16 views b (2-byte aligned, even length) as uint16s.
func bytesU16(b []byte) []uint16 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
}

// F32ToBF16 rounds f to bfloat16, to nearest even; NaN stays NaN.
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// BF16ToF32 widens a bfloat16 exactly.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToF16 rounds f to IEEE binary16, to nearest even, with subnormals;
// overflow gives infinity, NaN stays NaN. (F. Giesen's
// float_to_half_fast3_rtne: branch-free for normal results.)
func F32ToF16(f float32) uint16 {
	const (
		f32Inf      = 255 << 23
		f16Max      = (127 + 16) << 23
		denormMagic = ((127 - 15) + (23 - 10) + 1) << 23
		rebias      = 0xC8000FFF // ((15 - 127) << 23) + 0xfff, mod 2^32
	)
	u := math.Float32bits(f)
	sign := uint16(u>>16) & 0x8000
	u &^= 0x80000000
	switch {
	case u >= f16Max:
		if u > f32Inf {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case u < 113<<23:
		v := math.Float32frombits(u) + math.Float32frombits(denormMagic)
		return sign | uint16(math.Float32bits(v)-denormMagic)
	}
	u += rebias + (u>>13)&1
	return sign | uint16(u>>13)
}

// F16ToF32 widens an IEEE binary16 exactly.
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		e := uint32(113)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

var (
	f16TableOnce sync.Once
	f16Table     []float32
)

// f16Decode returns the 64 Ki-entry binary16 -> float32 table.
func f16Decode() []float32 {
	f16TableOnce.Do(func() {
		f16Table = make([]float32, 1<<16)
		for i := range f16Table {
			f16Table[i] = F16ToF32(uint16(i))
		}
	})
	return f16Table
}

// roundTrip returns v as it reads after a trip through the wire format.
func roundTrip(dt DType, v float32) float32 {
	switch dt {
	case BFloat16:
		return BF16ToF32(F32ToBF16(v))
	case Float16:
		return F16ToF32(F32ToF16(v))
	}
	return v
}
