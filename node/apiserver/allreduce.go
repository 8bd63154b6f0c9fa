package apiserver

import (
	"context"
	"fmt"
	"slices"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// maxWeight bounds a weighted mean's weight: a sample count, exact in a
// float64 and summable over many members without overflow.
const maxWeight float64 = 1 << 53

// allReduce checks an all-reduce call and hands it to the backend: at once
// with its outcome, or (with parts) pending on this connection.
func (s *Server) allReduce(_ context.Context, c *conn, req *localapi.Request) localapi.Response {
	m, ok := c.bufs[req.Buffer]
	if !ok {
		return apiErr(localapi.CodeBadRequest, "no buffer %d registered on this connection", req.Buffer)
	}
	if req.DType != "" && req.DType != "float32" {
		return apiErr(localapi.CodeBadRequest, "dtype %q: buffers are float32", req.DType)
	}
	data, err := m.Float32s(req.Offset, req.Count)
	if err != nil {
		return apiErr(localapi.CodeBadRequest, "%v", err)
	}
	opt := allreduce.Options{Wire: allreduce.Float32, Op: allreduce.Mean, Weight: req.Weight}
	if req.Wire != "" {
		if opt.Wire, err = allreduce.ParseDType(req.Wire); err != nil {
			return apiErr(localapi.CodeBadRequest, "%v", err)
		}
	}
	if req.Reduce != "" {
		if opt.Op, err = allreduce.ParseOp(req.Reduce); err != nil {
			return apiErr(localapi.CodeBadRequest, "%v", err)
		}
	}
	if req.SyncEvery < 0 || req.SyncEvery > localapi.MaxSyncEvery {
		return apiErr(localapi.CodeBadRequest, "sync_every %d: want 0 (every step) to %d inner steps", req.SyncEvery, localapi.MaxSyncEvery)
	}
	if opt.Op == allreduce.WeightedMean && !(req.Weight >= 0 && req.Weight <= maxWeight) {
		return apiErr(localapi.CodeBadRequest, "weight %v must be a number in [0, %g] (a sample count)", req.Weight, maxWeight)
	}
	if bad := s.isTrainer(c); bad != nil {
		return *bad
	}
	if c.pending != nil {
		return apiErr(localapi.CodeBusy, "the all-reduce in parts of step %d is pending on this connection: call allreduce_wait first", c.pendingStep)
	}
	mode := training{syncEvery: req.SyncEvery, wire: opt.Wire, elems: len(data)}
	if len(req.Parts) == 0 {
		p, refused := s.b.Submit(req.Step, data, opt, nil)
		if p == nil {
			return refused
		}
		return s.applied(mode, p.Wait())
	}
	parts, err := checkParts(req.Parts, len(data))
	if err != nil {
		return apiErr(localapi.CodeBadRequest, "%v", err)
	}
	p, refused := s.b.Submit(req.Step, data, opt, parts)
	if p == nil {
		return refused
	}
	c.pending, c.pendingStep, c.pendingBuf, c.pendingMode = p, req.Step, req.Buffer, mode
	return localapi.Response{Pending: true, Step: req.Step}
}

func (s *Server) partReady(_ context.Context, c *conn, req *localapi.Request) localapi.Response {
	if c.pending == nil || c.pendingStep != req.Step {
		return apiErr(localapi.CodeNotFound, "part_ready: no all-reduce in parts of step %d pending on this connection", req.Step)
	}
	if err := c.pending.PartReady(req.Part); err != nil {
		return apiErr(localapi.CodeBadRequest, "part_ready: %v", err)
	}
	return localapi.Response{}
}

func (s *Server) allReduceWait(_ context.Context, c *conn, req *localapi.Request) localapi.Response {
	if c.pending == nil || c.pendingStep != req.Step {
		return apiErr(localapi.CodeNotFound, "allreduce_wait: no all-reduce in parts of step %d pending on this connection", req.Step)
	}
	p := c.pending
	c.pending = nil
	return s.applied(c.pendingMode, p.Wait())
}

// training is what an all-reduce call says of the trainer's mode.
type training struct {
	syncEvery int
	wire      allreduce.DType
	elems     int
}

// applied records the trainer's mode for status when resp is an applied
// round, and returns resp.
func (s *Server) applied(t training, resp localapi.Response) localapi.Response {
	if resp.Code != "" || len(resp.Members) == 0 {
		return resp
	}
	st := localapi.TrainingStatus{Mode: "every_step", SyncEvery: t.syncEvery, Wire: t.wire.String(),
		Step: resp.Step, Members: len(resp.Members), WireBytes: int64(t.wire.WireLen(t.elems))}
	if t.syncEvery > 0 {
		st.Mode = "diloco"
	}
	n := int64(st.Members)
	st.SentBytes = 2 * (n - 1) * st.WireBytes / n
	s.mu.Lock()
	s.training = st
	s.mu.Unlock()
	s.b.Trained(st)
	return resp
}

// checkParts checks that parts tile a buffer of n elements.
func checkParts(in [][2]int64, n int) ([]Part, error) {
	if len(in) > localapi.MaxParts {
		return nil, fmt.Errorf("parts: %d, at most %d", len(in), localapi.MaxParts)
	}
	parts := make([]Part, len(in))
	for i, p := range in {
		if p[0] < 0 || p[1] < 1 || p[0] > int64(n) || p[1] > int64(n)-p[0] {
			return nil, fmt.Errorf("part %d [%d, +%d] is not a non-empty range of the %d elements", i, p[0], p[1], n)
		}
		parts[i] = Part{int(p[0]), int(p[1])}
	}
	sorted := slices.Clone(parts)
	slices.SortFunc(sorted, func(a, b Part) int { return a.Off - b.Off })
	next := 0
	for _, p := range sorted {
		if p.Off != next {
			return nil, fmt.Errorf("parts must tile the %d elements: element %d is in none or two", n, min(p.Off, next))
		}
		next = p.Off + p.N
	}
	if next != n {
		return nil, fmt.Errorf("parts must tile the %d elements: they end at %d", n, next)
	}
	return parts, nil
}
