//go:build !purego

package allreduce

import "golang.org/x/sys/cpu"

// useAVX2 selects the vector bfloat16 kernels of bf16_amd64.s (tests turn
// it off to compare them with the scalar ones).
var useAVX2 = cpu.X86.HasAVX2

//go:noescape
func encodeBF16AVX2(w *uint16, src *float32, n int, scale float32)

//go:noescape
func accumulateBF16AVX2(w *uint16, local *float32, n int, scale float32)

//go:noescape
func finishBF16AVX2(out, local *float32, w *uint16, n int, scale, post float32)

//go:noescape
func gatherBF16AVX2(out *float32, w *uint16, n int)

// vecLen is how many leading elements of an n-element call the vector
// kernels take: a multiple of 8, 0 without AVX2.
func vecLen(n int) int {
	if !useAVX2 {
		return 0
	}
	return n &^ 7
}

func encodeBF16(w []uint16, src []float32, scale float32) {
	w = w[:len(src)]
	m := vecLen(len(src))
	if m > 0 {
		encodeBF16AVX2(&w[0], &src[0], m, scale)
	}
	encodeBF16Generic(w[m:], src[m:], scale)
}

func accumulateBF16(w []uint16, local []float32, scale float32) {
	local = local[:len(w)]
	m := vecLen(len(w))
	if m > 0 {
		accumulateBF16AVX2(&w[0], &local[0], m, scale)
	}
	accumulateBF16Generic(w[m:], local[m:], scale)
}

func finishBF16(out, local []float32, w []uint16, scale, post float32) {
	local, w = local[:len(out)], w[:len(out)]
	m := vecLen(len(out))
	if m > 0 {
		finishBF16AVX2(&out[0], &local[0], &w[0], m, scale, post)
	}
	finishBF16Generic(out[m:], local[m:], w[m:], scale, post)
}

func gatherBF16(out []float32, w []uint16) {
	w = w[:len(out)]
	m := vecLen(len(out))
	if m > 0 {
		gatherBF16AVX2(&out[0], &w[0], m)
	}
	gatherBF16Generic(out[m:], w[m:])
}
