package rounds

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	simSchedules = flag.Int("sim.schedules", 2000, "how many seeded schedules TestSimulation runs")
	simFirst     = flag.Uint64("sim.first", 1, "the first seed TestSimulation runs (seeds first .. first+schedules-1)")
	simSeed      = flag.Uint64("sim.seed", 0, "replay this one schedule (with -sim.trace to print it)")
	simTrace     = flag.Bool("sim.trace", false, "print the replayed schedule's events")
)

const (
	simFaultFor = 4 * time.Second
	simSettle   = 20 * time.Second
)

// simSize draws the number of machines of a schedule from its seed: 3 to
// 9, and one schedule in 50 a lab-sized list of 17 to 33.
func simSize(seed uint64) int {
	if seed%50 == 0 {
		return 17 + int(seed/50%17)
	}
	return 3 + int(seed%7)
}

func runSchedule(seed uint64, trace bool) (*Sim, error) {
	s := newSim(seed, simSize(seed))
	s.longReduces = true
	s.traceOn = trace
	s.traceMsgs = trace && os.Getenv("SIM_TRACE_MSGS") != ""
	return s, s.run(simFaultFor, simSettle)
}

// TestSimulation checks the five invariants over many seeded fault
// schedules. A failure prints the seed and the command that replays it.
func TestSimulation(t *testing.T) {
	if *simSeed != 0 {
		s, err := runSchedule(*simSeed, *simTrace)
		if *simTrace {
			t.Log("\n" + strings.Join(s.trace, "\n"))
		}
		if err != nil {
			t.Fatalf("seed %d (%d machines): %v", *simSeed, simSize(*simSeed), err)
		}
		t.Logf("seed %d: %d events, %d applies", *simSeed, s.events, s.applies)
		return
	}
	n := *simSchedules
	var next, events, applies atomic.Int64
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	start := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				seed := *simFirst + uint64(i) - 1
				s, err := runSchedule(seed, false)
				events.Add(int64(s.events))
				applies.Add(int64(s.applies))
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("seed %d (%d machines): %v\n  replay: go test ./node/rounds -run 'TestSimulation$' -sim.seed=%d -sim.trace", seed, simSize(seed), err, seed))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("sim: first=%d schedules=%d violations=%d events=%d applies=%d wall=%s\n", *simFirst, n, len(failures), events.Load(), applies.Load(), time.Since(start).Round(time.Millisecond))
	for i, f := range failures {
		if i == 10 {
			t.Errorf("... and %d more", len(failures)-10)
			break
		}
		t.Error(f)
	}
}

// FuzzSimulation builds a schedule from fuzz input: the seed of its
// randomness and the number of machines.
func FuzzSimulation(f *testing.F) {
	f.Add(uint64(1), uint8(3))
	f.Add(uint64(42), uint8(9))
	f.Fuzz(func(t *testing.T, seed uint64, n uint8) {
		s := newSim(seed, 3+int(n%7))
		if err := s.run(simFaultFor, simSettle); err != nil {
			t.Fatalf("seed %d, %d machines: %v", seed, 3+int(n%7), err)
		}
	})
}
