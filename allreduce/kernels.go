package allreduce

// Reduce kernels. Each runs one tight loop over a chunk; wire holds the
// chunk in the round's wire format, local and out are float32 and may be
// the same slice. scale multiplies this member's contribution (its weight
// for WeightedMean, else 1); post multiplies a finished element (1/n for
// Mean, 1/sum(w) for WeightedMean, else 1).

// encode writes src*scale into wire in format dt.
func encode(dt DType, wire []byte, src []float32, scale float32) {
	switch dt {
	case Float32:
		w := bytesF32(wire)[:len(src)]
		if scale == 1 {
			copy(w, src)
			return
		}
		for i, v := range src {
			w[i] = v * scale
		}
	case BFloat16:
		w := bytesU16(wire)[:len(src)]
		for i, v := range src {
			w[i] = F32ToBF16(v * scale)
		}
	case Float16:
		w := bytesU16(wire)[:len(src)]
		for i, v := range src {
			w[i] = F32ToF16(v * scale)
		}
	}
}

// gather decodes wire into out.
func gather(dt DType, out []float32, wire []byte) {
	switch dt {
	case Float32:
		copy(out, bytesF32(wire)[:len(out)])
	case BFloat16:
		w := bytesU16(wire)[:len(out)]
		for i, h := range w {
			out[i] = BF16ToF32(h)
		}
	case Float16:
		w := bytesU16(wire)[:len(out)]
		t := f16Decode()
		for i, h := range w {
			out[i] = t[h]
		}
	}
}

// accumulate sets out = decode(wire) + scale*local.
func accumulate(dt DType, out, local []float32, wire []byte, scale float32) {
	local = local[:len(out)]
	switch dt {
	case Float32:
		w := bytesF32(wire)[:len(out)]
		if scale == 1 {
			addF32(out, w, local)
			return
		}
		for i := range out {
			out[i] = w[i] + scale*local[i]
		}
	case BFloat16:
		w := bytesU16(wire)[:len(out)]
		for i := range out {
			out[i] = BF16ToF32(w[i]) + scale*local[i]
		}
	case Float16:
		w := bytesU16(wire)[:len(out)]
		t := f16Decode()
		for i := range out {
			out[i] = t[w[i]] + scale*local[i]
		}
	}
}

// finish sets out = roundTrip((decode(wire) + scale*local) * post): the
// element's final value, as every other member will decode it.
func finish(dt DType, out, local []float32, wire []byte, scale, post float32) {
	local = local[:len(out)]
	switch dt {
	case Float32:
		w := bytesF32(wire)[:len(out)]
		if scale == 1 && post == 1 {
			addF32(out, w, local)
			return
		}
		for i := range out {
			out[i] = (w[i] + scale*local[i]) * post
		}
	case BFloat16:
		w := bytesU16(wire)[:len(out)]
		for i := range out {
			out[i] = BF16ToF32(F32ToBF16((BF16ToF32(w[i]) + scale*local[i]) * post))
		}
	case Float16:
		w := bytesU16(wire)[:len(out)]
		t := f16Decode()
		for i := range out {
			out[i] = t[F32ToF16((t[w[i]]+scale*local[i])*post)]
		}
	}
}

// addF32 sets out = a + b, unrolled by four (the compiler does not
// vectorise; this halves the loop overhead and bounds checks).
func addF32(out, a, b []float32) {
	a, b = a[:len(out)], b[:len(out)]
	i := 0
	for ; i+4 <= len(out); i += 4 {
		o, x, y := out[i:i+4:i+4], a[i:i+4:i+4], b[i:i+4:i+4]
		o[0] = x[0] + y[0]
		o[1] = x[1] + y[1]
		o[2] = x[2] + y[2]
		o[3] = x[3] + y[3]
	}
	for ; i < len(out); i++ {
		out[i] = a[i] + b[i]
	}
}
