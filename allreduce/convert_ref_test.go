package allreduce

import (
	"math"
	"math/rand/v2"
	"testing"
)

// f32ToF16Ref is a straightforward bit-by-bit binary16 rounding, kept to
// check the fast F32ToF16.
func f32ToF16Ref(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		r := mant >> shift
		rem := mant & (1<<shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++
	}
	return sign | uint16(r)
}

func TestF32ToF16MatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	check := func(u uint32) {
		f := math.Float32frombits(u)
		got, want := F32ToF16(f), f32ToF16Ref(f)
		if f != f { // NaN: any NaN will do
			if got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
				t.Fatalf("%#08x: got %#04x, want a NaN", u, got)
			}
			return
		}
		if got != want {
			t.Fatalf("%#08x (%v): got %#04x, want %#04x", u, f, got, want)
		}
	}
	for range 1 << 20 {
		check(r.Uint32())
	}
	// Every exponent, with mantissas around the rounding points.
	for e := uint32(0); e < 256; e++ {
		for _, m := range []uint32{0, 1, 0xfff, 0x1000, 0x1001, 0x2000, 0x3000, 0x7fffff, 0x400000, 0x7fe000, 0x7ff000} {
			check(e<<23 | m)
			check(1<<31 | e<<23 | m)
		}
	}
}
