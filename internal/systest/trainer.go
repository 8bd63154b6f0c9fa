package systest

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"math"
	"time"

	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// Applied is one round a trainer applied.
type Applied struct {
	Step    uint64
	Digest  string   // SHA-256 prefix of the result bytes
	Members []string // the ring that produced it
	At      time.Time
	Joins   int // how many times the trainer had joined when it applied this round
}

// Synthetic is a trainer loop with synthetic gradients: at step k a node
// contributes values derived from (k, its peer ID), all-reduces them with
// the mean, and records a digest of the result it applies.
type Synthetic struct {
	Dir   string
	Size  int           // elements
	Steps uint64        // stop after applying this step (exclusive)
	Pause time.Duration // compute time between rounds
	// Exact: contribute small integers with the sum (float32 adds them
	// without rounding), and check every applied result against the exact
	// sum of the contributions of its ring: Run fails on the first element
	// that differs.
	Exact bool
	// Parts > 1 submits each round in that many parts (AllReduceParts),
	// marking them ready one after another as a backward pass would, and
	// waits for the result.
	Parts int
	// Record is called for every applied round, in order.
	Record func(Applied)
}

// Run joins the mesh and runs rounds until Steps, ctx ends or the node goes
// away (then it returns the error).
func (s *Synthetic) Run(ctx context.Context) error {
	c, err := client.Dial(ctx, s.Dir)
	if err != nil {
		return err
	}
	defer c.Close()
	buf, err := c.NewBuffer(ctx, s.Size)
	if err != nil {
		return err
	}
	defer buf.Close()
	step, err := s.join(ctx, c)
	if err != nil {
		return err
	}
	self := c.Hello.Self
	joins := 1
	op := "mean"
	if s.Exact {
		op = "sum"
	}
	return client.Loop{
		Step: func(ctx context.Context) (bool, error) {
			if step >= s.Steps {
				return true, nil
			}
			s.fill(buf.Data, step, self)
			resp, err := s.reduce(ctx, buf, step, client.ReduceOptions{Reduce: op})
			if client.IsCode(err, localapi.CodeStepMismatch) {
				return false, fmt.Errorf("trainer %s: %w", s.Dir, err)
			}
			if err != nil {
				return false, err
			}
			if s.Exact {
				if err := checkSum(buf.Data, resp.Step, resp.Members); err != nil {
					return false, fmt.Errorf("trainer %s: %w", s.Dir, err)
				}
			}
			s.Record(Applied{Step: resp.Step, Digest: Digest(buf.Data), Members: resp.Members, At: time.Now(), Joins: joins})
			step = resp.NextStep
			if s.Pause > 0 {
				time.Sleep(s.Pause)
			}
			return false, nil
		},
		Rejoin: func(ctx context.Context, _ *client.APIError) error {
			var err error
			step, err = s.join(ctx, c)
			joins++
			return err
		},
	}.Run(ctx)
}

// reduce all-reduces buf for step, whole or in s.Parts parts.
func (s *Synthetic) reduce(ctx context.Context, buf *client.Buffer, step uint64, opt client.ReduceOptions) (localapi.Response, error) {
	if s.Parts <= 1 {
		return buf.AllReduce(ctx, step, opt)
	}
	n := int64(len(buf.Data))
	var parts [][2]int64
	for i := range int64(s.Parts) {
		lo, hi := n*i/int64(s.Parts), n*(i+1)/int64(s.Parts)
		if hi > lo {
			parts = append(parts, [2]int64{lo, hi - lo})
		}
	}
	if err := buf.AllReduceParts(ctx, step, opt, parts); err != nil {
		return localapi.Response{}, err
	}
	for i := range parts {
		if err := buf.PartReady(ctx, step, i); err != nil {
			return localapi.Response{}, err
		}
	}
	return buf.Wait(ctx, step)
}

func (s *Synthetic) join(ctx context.Context, c *client.Client) (uint64, error) {
	resp, err := c.JoinWait(ctx, 0, nil)
	return resp.Step, err
}

// fill writes node self's synthetic contribution for step.
func (s *Synthetic) fill(b []float32, step uint64, self string) {
	for i := range b {
		x := contribution(step, self, i)
		if s.Exact {
			b[i] = float32(x%2001) - 1000
		} else {
			b[i] = float32(x%2001)/1000 - 1
		}
	}
}

func contribution(step uint64, self string, i int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(self))
	x := h.Sum64() ^ step*0x9e3779b97f4a7c15 + uint64(i)*0xbf58476d1ce4e5b9
	return x ^ x>>31
}

// checkSum reports the first element of an Exact step's result that is not
// the sum of the ring's contributions.
func checkSum(b []float32, step uint64, ring []string) error {
	if len(ring) == 0 {
		return fmt.Errorf("step %d: applied with an empty ring", step)
	}
	for i, v := range b {
		var want float32
		for _, id := range ring {
			want += float32(contribution(step, id, i)%2001) - 1000
		}
		if v != want {
			return fmt.Errorf("step %d: element %d = %v, want %v, the exact sum of the ring %v", step, i, v, want, ring)
		}
	}
	return nil
}

// Digest is a short SHA-256 of a float32 buffer's bytes.
func Digest(b []float32) string {
	h := sha256.New()
	var w [4]byte
	for _, f := range b {
		binary.LittleEndian.PutUint32(w[:], math.Float32bits(f))
		h.Write(w[:])
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}
