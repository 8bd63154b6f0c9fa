//go:build !amd64 || purego

package allreduce

// Without the amd64 vector kernels the scalar ones do the whole job.

const useAVX2 = false

func encodeBF16(w []uint16, src []float32, scale float32) { encodeBF16Generic(w, src, scale) }

func accumulateBF16(w []uint16, local []float32, scale float32) {
	accumulateBF16Generic(w, local, scale)
}

func finishBF16(out, local []float32, w []uint16, scale, post float32) {
	finishBF16Generic(out, local, w, scale, post)
}

func gatherBF16(out []float32, w []uint16) { gatherBF16Generic(out, w) }
