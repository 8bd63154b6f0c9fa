package allreduce

// Reduce kernels. Each runs one tight loop over a chunk; wire holds the
// chunk in the round's wire format (and is updated in place where the
// result is forwarded), local and out are float32 and may be the same
// slice. scale multiplies this member's contribution (its weight
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
		encodeBF16(bytesU16(wire)[:len(src)], src, scale)
	case Float16:
		w := bytesU16(wire)[:len(src)]
		for i, v := range src {
			w[i] = F32ToF16(v * scale)
		}
	case Int8, Float4:
		encodeQuant(dt, wire, src, scale)
	}
}

// gather decodes wire into out.
func gather(dt DType, out []float32, wire []byte) {
	switch dt {
	case Float32:
		copy(out, bytesF32(wire)[:len(out)])
	case BFloat16:
		gatherBF16(out, bytesU16(wire)[:len(out)])
	case Float16:
		w := bytesU16(wire)[:len(out)]
		t := f16Decode()
		for i, h := range w {
			out[i] = t[h]
		}
	case Int8, Float4:
		gatherQuant(dt, out, wire)
	}
}

// accumulate adds scale*local to the chunk in wire, in place: the partial
// sum, already in wire format for forwarding.
func accumulate(dt DType, wire []byte, local []float32, scale float32) {
	switch dt {
	case Float32:
		w := bytesF32(wire)[:len(local)]
		if scale == 1 {
			addInPlace(w, local)
			return
		}
		addScaled(w, local, scale)
	case BFloat16:
		accumulateBF16(bytesU16(wire)[:len(local)], local, scale)
	case Float16:
		w := bytesU16(wire)[:len(local)]
		t := f16Decode()
		for i := range w {
			w[i] = F32ToF16(t[w[i]] + scale*local[i])
		}
	case Int8, Float4:
		accumulateQuant(dt, wire, local, scale)
	}
}

// finish computes the final value v = (decode(wire) + scale*local) * post,
// writes it back into wire (for forwarding) and stores in out the value
// as decoded from those wire bytes, so out matches every other member.
func finish(dt DType, out, local []float32, wire []byte, scale, post float32) {
	local = local[:len(out)]
	switch dt {
	case Float32:
		w := bytesF32(wire)[:len(out)]
		if scale == 1 && post == 1 {
			addInPlace(w, local)
			copy(out, w)
			return
		}
		for i := range out {
			v := (w[i] + scale*local[i]) * post
			w[i] = v
			out[i] = v
		}
	case BFloat16:
		finishBF16(out, local, bytesU16(wire)[:len(out)], scale, post)
	case Float16:
		w := bytesU16(wire)[:len(out)]
		t := f16Decode()
		for i := range out {
			h := F32ToF16((t[w[i]] + scale*local[i]) * post)
			w[i] = h
			out[i] = t[h]
		}
	case Int8, Float4:
		finishQuant(dt, out, local, wire, scale, post)
	}
}

// addInPlace sets a += b, unrolled by four (the compiler does not
// vectorise; this cuts the loop overhead and bounds checks).
func addInPlace(a, b []float32) {
	b = b[:len(a)]
	i := 0
	for ; i+4 <= len(a); i += 4 {
		x, y := a[i:i+4:i+4], b[i:i+4:i+4]
		x[0] += y[0]
		x[1] += y[1]
		x[2] += y[2]
		x[3] += y[3]
	}
	for ; i < len(a); i++ {
		a[i] += b[i]
	}
}

// addScaled sets a += s*b, unrolled by four as addInPlace (a loop of its
// own, whose speed does not depend on where the kernel around it puts it).
func addScaled(a, b []float32, s float32) {
	b = b[:len(a)]
	i := 0
	for ; i+4 <= len(a); i += 4 {
		x, y := a[i:i+4:i+4], b[i:i+4:i+4]
		x[0] += s * y[0]
		x[1] += s * y[1]
		x[2] += s * y[2]
		x[3] += s * y[3]
	}
	for ; i < len(a); i++ {
		a[i] += s * b[i]
	}
}

// Scalar bfloat16 kernels: the reference, the tail of the vector kernels
// (bf16_amd64.s) and the whole job where those do not run. Each slice is
// as long as the first.

func encodeBF16Generic(w []uint16, src []float32, scale float32) {
	w = w[:len(src)]
	for i, v := range src {
		w[i] = F32ToBF16(v * scale)
	}
}

func accumulateBF16Generic(w []uint16, local []float32, scale float32) {
	local = local[:len(w)]
	for i, h := range w {
		w[i] = F32ToBF16(BF16ToF32(h) + scale*local[i])
	}
}

func finishBF16Generic(out, local []float32, w []uint16, scale, post float32) {
	local, w = local[:len(out)], w[:len(out)]
	for i := range out {
		h := F32ToBF16((BF16ToF32(w[i]) + scale*local[i]) * post)
		w[i] = h
		out[i] = BF16ToF32(h)
	}
}

func gatherBF16Generic(out []float32, w []uint16) {
	w = w[:len(out)]
	for i, h := range w {
		out[i] = BF16ToF32(h)
	}
}
