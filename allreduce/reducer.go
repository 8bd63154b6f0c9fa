package allreduce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Reducer runs all-reduce rounds over a Transport. Safe for concurrent use
// (different rounds may run at once).
type Reducer struct {
	cfg     Config
	tr      Transport
	log     *slog.Logger
	metrics Metrics
	pool    sync.Pool // *[]float32 of ChunkBytes/4 elements
}

// New returns a Reducer. A nil logger or metrics does nothing. New does no
// I/O; cfg is validated by every AllReduce call.
func New(cfg Config, tr Transport, logger *slog.Logger, metrics Metrics) *Reducer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if metrics == nil {
		metrics = NopMetrics()
	}
	r := &Reducer{cfg: cfg, tr: tr, log: logger.With("component", "allreduce"), metrics: metrics}
	r.pool.New = func() any {
		b := make([]float32, cfg.ChunkBytes/4)
		return &b
	}
	return r
}

// AllReduce reduces src across the ring into dst (len(dst) == len(src)),
// with every member of round calling it with equal round, options (except
// Weight) and buffer length. src is never written unless dst aliases it.
// On success every member holds bit-identical dst bytes. On error dst is
// unspecified (it may hold partial sums) and must not be used; src is
// intact unless it aliases dst, so the caller can retry the round with a
// new ring. Errors caused by a peer are *PeerError.
func (r *Reducer) AllReduce(ctx context.Context, self peer.ID, round Round, src, dst []float32, opt Options) (res Result, err error) {
	start := time.Now()
	defer func() { r.metrics.RoundDone(time.Since(start), len(src), len(round.Ring), err) }()
	if err := r.cfg.Validate(); err != nil {
		return Result{}, err
	}
	if _, err := checkCall(self, round, src, dst, opt); err != nil {
		return Result{}, err
	}
	n := len(round.Ring)
	if n == 1 {
		copy(dst, src)
		if opt.Op == WeightedMean {
			if opt.Weight == 0 {
				return Result{}, ErrZeroTotalWeight
			}
			return Result{TotalWeight: opt.Weight}, nil
		}
		return Result{TotalWeight: 1}, nil
	}
	x := r.newRun(self, round, src, dst, opt)
	r.log.Debug("round start", "round", round.String(), "step", round.Step, "elems", len(src))
	err = x.do(ctx)
	if err != nil {
		r.log.Debug("round failed", "round", round.String(), "step", round.Step, "err", err)
		return Result{}, err
	}
	return Result{TotalWeight: x.total}, nil
}

// checkCall validates one call and returns self's position in the ring.
func checkCall(self peer.ID, round Round, src, dst []float32, opt Options) (int, error) {
	if len(dst) != len(src) {
		return 0, fmt.Errorf("%w: len(dst) %d != len(src) %d", ErrBadOptions, len(dst), len(src))
	}
	if !opt.Wire.known() {
		return 0, fmt.Errorf("%w: wire %v", ErrBadOptions, opt.Wire)
	}
	switch opt.Op {
	case Sum, Mean:
	case WeightedMean:
		if math.IsNaN(opt.Weight) || math.IsInf(opt.Weight, 0) || opt.Weight < 0 {
			return 0, fmt.Errorf("%w: weight %v must be finite and >= 0", ErrBadOptions, opt.Weight)
		}
	default:
		return 0, fmt.Errorf("%w: op %v", ErrBadOptions, opt.Op)
	}
	if len(round.Mesh) > MaxMeshLen {
		return 0, fmt.Errorf("%w: mesh name %d bytes, max %d", ErrBadRound, len(round.Mesh), MaxMeshLen)
	}
	n := len(round.Ring)
	if n == 0 || n > MaxRingSize {
		return 0, fmt.Errorf("%w: ring of %d members", ErrBadRound, n)
	}
	rank := -1
	seen := make(map[peer.ID]bool, n)
	for i, p := range round.Ring {
		if seen[p] {
			return 0, fmt.Errorf("%w: %s twice in the ring", ErrBadRound, p)
		}
		seen[p] = true
		if p == self {
			rank = i
		}
	}
	if rank < 0 {
		return 0, fmt.Errorf("%w: self %s not in the ring", ErrBadRound, self)
	}
	if len(round.Links) != 0 && len(round.Links) != n {
		return 0, fmt.Errorf("%w: %d links for a ring of %d", ErrBadRound, len(round.Links), n)
	}
	if round.Part >= max(round.Parts, 1) {
		return 0, fmt.Errorf("%w: part %d of %d", ErrBadRound, round.Part, max(round.Parts, 1))
	}
	if !nativeLittleEndian {
		return 0, fmt.Errorf("%w: big-endian hosts are not supported", ErrBadOptions)
	}
	return rank, nil
}

// run is the state of one AllReduce call with n >= 2.
type run struct {
	r          *Reducer
	self       peer.ID
	round      Round
	opt        Options
	src, dst   []float32
	plan       Plan
	ring       []peer.ID // in plan order
	n, rank    int       // rank: self's position in ring
	lanes      []span
	chunkElems int
	scale      float32 // own contribution multiplier
	post       float32 // final multiplier; valid once postReady is closed
	postReady  chan struct{}
	weights    []float64
	total      float64

	mu       sync.Mutex
	inbound  []Stream // streams to notify if the round aborts
	aborting bool
	abortMsg []byte
}

func (r *Reducer) newRun(self peer.ID, round Round, src, dst []float32, opt Options) *run {
	n := len(round.Ring)
	plan := PlanRound(round.Links)
	if len(round.Links) == 0 {
		plan = PlanRound(make([]Link, n))
	}
	ring := make([]peer.ID, n)
	rank := 0
	for i, j := range plan.Order {
		ring[i] = round.Ring[j]
		if ring[i] == self {
			rank = i
		}
	}
	x := &run{
		r: r, self: self, round: round, opt: opt, src: src, dst: dst, plan: plan, ring: ring, n: n, rank: rank,
		lanes:      split(len(src), r.cfg.Lanes),
		chunkElems: opt.Wire.chunkElems(r.cfg.ChunkBytes),
		scale:      1,
		post:       1,
		postReady:  make(chan struct{}),
		total:      float64(n),
	}
	switch opt.Op {
	case Mean:
		x.post = float32(1 / float64(n))
		close(x.postReady)
	case WeightedMean:
		x.scale = float32(opt.Weight)
		x.weights = make([]float64, n)
		x.weights[rank] = opt.Weight
	default:
		close(x.postReady)
	}
	return x
}

// header is the header of lane k.
func (x *run) header(k int) Header {
	return Header{
		Version:      Version,
		DType:        x.opt.Wire,
		Op:           x.opt.Op,
		Lane:         uint8(k),
		Lanes:        uint8(len(x.lanes)),
		Step:         x.round.Step,
		Attempt:      x.round.Attempt,
		Count:        uint64(len(x.src)),
		ChunkBytes:   uint32(x.r.cfg.ChunkBytes),
		MembersHash:  x.round.MembersHash(),
		ScheduleHash: x.plan.Hash(),
		Part:         x.round.Part,
		Parts:        max(x.round.Parts, 1),
		Offset:       x.round.Offset,
		Flags:        x.r.cfg.headerFlags(),
		Mesh:         x.round.Mesh,
	}
}

// laneRing returns self's rank in lane k's ring order and its neighbours:
// even lanes go clockwise (plan order), odd lanes counter-clockwise.
func (x *run) laneRing(k int) (rank int, next, prev peer.ID) {
	n := x.n
	if k%2 == 0 {
		return x.rank, x.ring[(x.rank+1)%n], x.ring[(x.rank+n-1)%n]
	}
	return n - 1 - x.rank, x.ring[(x.rank+n-1)%n], x.ring[(x.rank+1)%n]
}

// do runs every lane and settles the outcome; see errors.go.
func (x *run) do(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	errc := make(chan error, 3*len(x.lanes)+1)
	var wg sync.WaitGroup
	for k := range x.lanes {
		l := x.newLane(k)
		wg.Add(2)
		go func() { defer wg.Done(); report(errc, l.sendSide(ctx, errc, &wg)) }()
		go func() { defer wg.Done(); report(errc, l.recvSide(ctx)) }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return x.settle(parent, cancel, errc, done)
}

func report(errc chan<- error, err error) {
	if err != nil {
		errc <- err
	}
}

// track remembers an inbound stream so an abort notice can be sent on it;
// if the round is already aborting, it sends the notice now and reports
// false.
func (x *run) track(s Stream) bool {
	x.mu.Lock()
	if x.aborting {
		msg := x.abortMsg
		x.mu.Unlock()
		x.notify(s, msg)
		return false
	}
	x.inbound = append(x.inbound, s)
	x.mu.Unlock()
	return true
}

// getBuf returns a pooled chunk buffer.
func (x *run) getBuf() *[]float32 { return x.r.pool.Get().(*[]float32) }

func (x *run) putBuf(b *[]float32) { x.r.pool.Put(b) }

// peerErr wraps a lane error with the neighbour it happened with, unless
// it already names a peer or is our own context's end.
func (x *run) peerErr(ctx context.Context, p peer.ID, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var pe *PeerError
	if errors.As(err, &pe) {
		return err
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return &PeerError{Peer: p, Round: x.round, Err: err}
}
