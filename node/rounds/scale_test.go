package rounds

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestMessagesPerStep counts the round messages one training step costs
// as the list grows (3 to 33 members, no faults, every member training):
// per member and in all, by type. A member's share must grow at most
// linearly with the list (issue 26: a 64-host mesh spends a few
// milliseconds of CPU per host on a step's agreement).
func TestMessagesPerStep(t *testing.T) {
	var table []string
	perMember := map[int]float64{}
	for _, n := range []int{3, 9, 17, 33} {
		s := newSim(1, n)
		for _, nd := range s.nodes {
			nd.m.cfg.MinMembers = n
		}
		byType := map[MsgType]int{}
		total := 0
		counting := false
		s.onSend = func(m Message) {
			if counting && m.From != m.To {
				byType[m.Type]++
				total++
			}
		}
		var from, to int
		runScriptEach(t, s, nil, func() {
			s.at(5*time.Second, func() { counting, from = true, s.applies })
			s.at(15*time.Second, func() { counting, to = false, s.applies })
		}, 15*time.Second+time.Millisecond, func() {})
		steps := float64(to-from) / float64(n)
		if steps < 5 {
			t.Fatalf("%d members: only %.1f steps in 10 s", n, steps)
		}
		pm := float64(total) / steps / float64(n)
		perMember[n] = pm
		var types []string
		for ty := MsgType(1); ty < msgTypeEnd; ty++ {
			if byType[ty] > 0 {
				types = append(types, fmt.Sprintf("%s %.1f", ty, float64(byType[ty])/steps/float64(n)))
			}
		}
		table = append(table, fmt.Sprintf("%2d members: %5.1f steps/s, %6.1f messages per member per step (%s), %7.0f per step in all",
			n, steps/10, pm, strings.Join(types, ", "), float64(total)/steps))
	}
	t.Log("round messages per step (simulation, no faults):\n" + strings.Join(table, "\n"))
	// Linear per member: 33 members may cost at most 33/9 times (plus
	// slack) what 9 cost per member.
	if limit := perMember[9] * 33 / 9 * 1.5; perMember[33] > limit {
		t.Errorf("33 members: %.1f messages per member per step, more than linear growth from 9 members allows (%.1f)", perMember[33], limit)
	}
}
