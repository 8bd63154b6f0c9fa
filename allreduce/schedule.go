package allreduce

// The schedule is pure: which segment and chunk a member sends and receives
// at each step of one lane. A lane is a contiguous part of the buffer
// reduced round the ring in one direction. With n members and steps
// t = 0 .. 2(n-1)-1, member r (its position in the lane's ring order):
//
//	reduce-scatter (t < n-1): sends segment (r-t) mod n, receives segment
//	  (r-t-1) mod n and adds its own contribution; at t = n-2 the received
//	  segment (r+1) mod n is complete and r finishes it (applies the op).
//	all-gather (t >= n-1, u = t-(n-1)): sends segment (r+1-u) mod n,
//	  receives segment (r-u) mod n and stores it.
//
// What r sends at step t+1 is exactly what it received at step t, so a
// received chunk can be forwarded as soon as it is reduced (pipelining).

// span is a half-open element range [Off, Off+Len).
type span struct{ Off, Len int }

// split cuts [0, total) into k contiguous parts whose lengths differ by at
// most one, the longer ones first.
func split(total, k int) []span {
	out := make([]span, k)
	base, rem := total/k, total%k
	off := 0
	for i := range out {
		l := base
		if i < rem {
			l++
		}
		out[i] = span{off, l}
		off += l
	}
	return out
}

// stepKind says what a receiver does with a chunk.
type stepKind uint8

const (
	stepAccumulate stepKind = iota // add own contribution, forward
	stepFinish                     // add own contribution, apply op: final value
	stepGather                     // store the final value, forward unless last
)

// schedule is one member's view of one lane.
type schedule struct {
	n, rank    int
	segs       []span // relative to the lane start
	chunkElems int
}

// newSchedule is rank's schedule of a lane of length elements; own is
// the plan's segment weights for the lane's direction (nil: equal
// segments).
func newSchedule(n, rank, length, chunkElems int, own []uint32) schedule {
	segs := split(length, n)
	if own != nil {
		segs = segments(length, own)
	}
	return schedule{n: n, rank: rank, segs: segs, chunkElems: chunkElems}
}

func (s schedule) steps() int { return 2 * (s.n - 1) }

func (s schedule) mod(i int) int { return ((i % s.n) + s.n) % s.n }

// sendSeg is the segment sent at step t.
func (s schedule) sendSeg(t int) int {
	if t < s.n-1 {
		return s.mod(s.rank - t)
	}
	return s.mod(s.rank + 1 - (t - (s.n - 1)))
}

// recvSeg is the segment received at step t.
func (s schedule) recvSeg(t int) int {
	if t < s.n-1 {
		return s.mod(s.rank - t - 1)
	}
	return s.mod(s.rank - (t - (s.n - 1)))
}

// kind is what the receiver does at step t.
func (s schedule) kind(t int) stepKind {
	switch {
	case t < s.n-2:
		return stepAccumulate
	case t == s.n-2:
		return stepFinish
	}
	return stepGather
}

// numChunks is the number of chunks segment seg is cut into.
func (s schedule) numChunks(seg int) int {
	return (s.segs[seg].Len + s.chunkElems - 1) / s.chunkElems
}

// chunk is chunk c of segment seg, relative to the lane start.
func (s schedule) chunk(seg, c int) span {
	sg := s.segs[seg]
	off := c * s.chunkElems
	l := min(s.chunkElems, sg.Len-off)
	return span{sg.Off + off, l}
}

// recvItems is the number of chunks received over the whole lane.
func (s schedule) recvItems() int {
	total := 0
	for t := 0; t < s.steps(); t++ {
		total += s.numChunks(s.recvSeg(t))
	}
	return total
}
