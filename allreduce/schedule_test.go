package allreduce

import (
	"fmt"
	"math/bits"
	"testing"
)

func TestSplit(t *testing.T) {
	for total := 0; total < 40; total++ {
		for k := 1; k < 9; k++ {
			parts := split(total, k)
			off := 0
			for i, p := range parts {
				if p.Off != off || p.Len < total/k || p.Len > total/k+1 {
					t.Fatalf("split(%d, %d)[%d]: got %+v", total, k, i, p)
				}
				off += p.Len
			}
			if off != total {
				t.Fatalf("split(%d, %d): covers %d", total, k, off)
			}
		}
	}
}

// TestScheduleProperties simulates a lane symbolically: every element
// carries the set of members whose contribution it holds. It checks that
// what a member sends at step t is what its successor expects, that each
// member contributes to each element exactly once, that each element is
// finished by exactly one member holding every contribution, and that
// every member ends with every element finished, stored exactly once.
func TestScheduleProperties(t *testing.T) {
	for n := 2; n <= 9; n++ {
		for _, length := range []int{0, 1, n - 1, n, 3*n + 1, 50} {
			for _, chunk := range []int{1, 2, 7} {
				t.Run(fmt.Sprintf("n=%d/len=%d/chunk=%d", n, length, chunk), func(t *testing.T) {
					checkSchedule(t, n, length, chunk)
				})
			}
		}
	}
}

func checkSchedule(t *testing.T, n, length, chunk int) {
	sch := make([]schedule, n)
	have := make([][]uint64, n) // contributions held per element (bitset)
	final := make([][]bool, n)
	contributed := make([][]int, n)
	finishedBy := make([]int, length)
	stored := make([][]int, n)
	for r := range n {
		sch[r] = newSchedule(n, r, length, chunk, nil)
		have[r] = make([]uint64, length)
		final[r] = make([]bool, length)
		contributed[r] = make([]int, length)
		stored[r] = make([]int, length)
	}
	all := uint64(1)<<n - 1
	for tt := 0; tt < sch[0].steps(); tt++ {
		// Every member sends, then every member receives what its
		// predecessor sent at the same step.
		type msg struct {
			seg  int
			vals []uint64
			fin  []bool
		}
		sent := make([]msg, n)
		for r := range n {
			seg := sch[r].sendSeg(tt)
			sp := sch[r].segs[seg]
			m := msg{seg: seg, vals: make([]uint64, sp.Len), fin: make([]bool, sp.Len)}
			for i := range sp.Len {
				e := sp.Off + i
				if tt == 0 {
					m.vals[i] = 1 << r
					contributed[r][e]++
				} else {
					m.vals[i], m.fin[i] = have[r][e], final[r][e]
				}
			}
			sent[r] = m
		}
		for r := range n {
			m := sent[(r+n-1)%n]
			seg := sch[r].recvSeg(tt)
			if seg != m.seg {
				t.Fatalf("step %d: member %d receives segment %d, predecessor sent %d", tt, r, seg, m.seg)
			}
			nc := sch[r].numChunks(seg)
			covered := 0
			for c := range nc {
				sp := sch[r].chunk(seg, c)
				if sp.Len <= 0 || sp.Len > chunk {
					t.Fatalf("chunk %d of segment %d: %+v", c, seg, sp)
				}
				covered += sp.Len
			}
			if covered != sch[r].segs[seg].Len {
				t.Fatalf("chunks of segment %d cover %d of %d", seg, covered, sch[r].segs[seg].Len)
			}
			sp := sch[r].segs[seg]
			for i := range sp.Len {
				e := sp.Off + i
				switch sch[r].kind(tt) {
				case stepAccumulate, stepFinish:
					if m.vals[i]&(1<<r) != 0 {
						t.Fatalf("element %d: member %d's contribution arrives twice", e, r)
					}
					have[r][e] = m.vals[i] | 1<<r
					contributed[r][e]++
					if sch[r].kind(tt) == stepFinish {
						if have[r][e] != all {
							t.Fatalf("element %d finished by %d with %d of %d contributions", e, r, bits.OnesCount64(have[r][e]), n)
						}
						final[r][e] = true
						finishedBy[e]++
					}
				case stepGather:
					if !m.fin[i] || m.vals[i] != all {
						t.Fatalf("element %d gathered by %d before it was final", e, r)
					}
					have[r][e], final[r][e] = all, true
					stored[r][e]++
				}
			}
		}
	}
	for e := range length {
		if finishedBy[e] != 1 {
			t.Fatalf("element %d finished %d times", e, finishedBy[e])
		}
		for r := range n {
			if contributed[r][e] != 1 {
				t.Fatalf("member %d contributed to element %d %d times", r, e, contributed[r][e])
			}
			if !final[r][e] || have[r][e] != all {
				t.Fatalf("member %d ends with element %d not final", r, e)
			}
			if stored[r][e] > 1 {
				t.Fatalf("member %d stored element %d %d times", r, e, stored[r][e])
			}
		}
	}
}
