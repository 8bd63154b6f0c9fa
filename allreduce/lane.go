package allreduce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// lane moves one contiguous part of the buffer round the ring in one
// direction: a sender to the lane's next member and a receiver from its
// previous member, linked by a queue of received chunks (already in wire
// format) that the sender forwards.
type lane struct {
	x          *run
	k          int
	off        int // lane start in the buffer
	sch        schedule
	next, prev peer.ID
	hdr        Header
	weighted   bool          // this lane gathers the weights first
	fwd        chan forward  // receiver -> sender: chunks to forward, in order
	wtok       chan struct{} // receiver -> sender: weight h known
}

// forward is a chunk, in wire format, the sender passes on. buf, when not
// nil, is the pooled buffer holding it, returned once written.
type forward struct {
	b   []byte
	buf *[]float32
}

func (x *run) newLane(k int) *lane {
	rank, next, prev := x.laneRing(k)
	sch := newSchedule(x.n, rank, x.lanes[k].Len, x.chunkElems, x.plan.Own[k%2])
	return &lane{
		x: x, k: k, off: x.lanes[k].Off, sch: sch, next: next, prev: prev,
		hdr:      x.header(k),
		weighted: k == 0 && x.opt.Op == WeightedMean,
		fwd:      make(chan forward, sch.recvItems()),
		wtok:     make(chan struct{}, x.n),
	}
}

// sendSide dials the next member, sends the lane and waits until the
// receiver has read everything (its EOF).
func (l *lane) sendSide(ctx context.Context, errc chan<- error, wg *sync.WaitGroup) error {
	x := l.x
	s, err := x.r.tr.Dial(ctx, l.next, l.hdr)
	if err != nil {
		// Only an unreachable peer is direct: a receiver that aborts
		// before accepting resets the stream without a notice.
		var ab *abortVerdict
		if errors.As(err, &ab) {
			return x.abortedBy(l.next, ab.c)
		}
		err = x.peerErr(ctx, l.next, fmt.Errorf("dial lane %d: %w", l.k, err))
		if errors.Is(err, ErrPeerUnreachable) {
			return direct(err)
		}
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	ctlDone := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := l.readControl(ctx, s)
		report(errc, err)
		ctlDone <- err
	}()
	if err := l.sendAll(ctx, s); err != nil {
		_ = s.Reset()
		return direct(x.peerErr(ctx, l.next, fmt.Errorf("send lane %d: %w", l.k, err)))
	}
	if err := s.CloseWrite(); err != nil {
		_ = s.Reset()
		return direct(x.peerErr(ctx, l.next, fmt.Errorf("close lane %d: %w", l.k, err)))
	}
	timer := time.NewTimer(x.r.cfg.FrameTimeout)
	defer timer.Stop()
	select {
	case err := <-ctlDone:
		if err != nil {
			_ = s.Reset()
			return nil // already reported by the control reader
		}
		_ = s.Close()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		_ = s.Reset()
		return x.peerErr(ctx, l.next, fmt.Errorf("%w: lane %d: receiver did not finish", ErrTimeout, l.k))
	}
}

// readControl reads what the receiver sends back while the lane runs:
// nothing until its EOF on success, or an abort notice.
func (l *lane) readControl(ctx context.Context, s Stream) error {
	c, err := readControl(s)
	switch {
	case err == io.EOF:
		return nil
	case err != nil:
		if ctx.Err() != nil {
			return nil
		}
		return direct(l.x.peerErr(ctx, l.next, fmt.Errorf("lane %d: %w", l.k, err)))
	case c.Type == ctrlAbort:
		return l.x.abortedBy(l.next, c)
	}
	return l.x.peerErr(ctx, l.next, fmt.Errorf("%w: lane %d: control message %d mid-round", ErrProtocol, l.k, c.Type))
}

// sendAll writes the weights (if this lane carries them) and every chunk.
func (l *lane) sendAll(ctx context.Context, s Stream) error {
	x := l.x
	cfg := x.r.cfg
	if l.weighted {
		for h := 0; h < x.n-1; h++ {
			if h > 0 {
				if err := wait(ctx, l.wtok); err != nil {
					return err
				}
			}
			_ = s.SetWriteDeadline(time.Now().Add(cfg.FrameTimeout))
			w := x.weights[l.sch.mod(x.rank-h)]
			if err := WriteFrame(s, encodeWeight(w)); err != nil {
				return fmt.Errorf("weight %d: %w", h, err)
			}
		}
	}
	buf := x.getBuf()
	defer x.putBuf(buf)
	wire := f32Bytes(*buf)
	dt := x.opt.Wire
	for t := 0; t < l.sch.steps(); t++ {
		seg := l.sch.sendSeg(t)
		for c := range l.sch.numChunks(seg) {
			var f forward
			if t == 0 {
				sp := l.sch.chunk(seg, c)
				vals := x.src[l.off+sp.Off : l.off+sp.Off+sp.Len]
				if dt == Float32 && x.scale == 1 {
					f.b = f32Bytes(vals)
				} else {
					encode(dt, wire, vals, x.scale)
					f.b = wire[:dt.WireLen(sp.Len)]
				}
			} else {
				select {
				case f = <-l.fwd:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			_ = s.SetWriteDeadline(time.Now().Add(cfg.FrameTimeout))
			err := WriteFrame(s, f.b)
			if f.buf != nil {
				x.putBuf(f.buf)
			}
			if err != nil {
				return fmt.Errorf("step %d chunk %d: %w", t, c, err)
			}
			x.r.metrics.BytesSent(l.k, len(f.b))
		}
	}
	return nil
}

// wait takes one token or returns ctx's error.
func wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recvSide accepts the previous member's stream, receives the lane, checks
// the sender's EOF and closes.
func (l *lane) recvSide(ctx context.Context) error {
	x := l.x
	s, err := x.r.tr.Accept(ctx, l.prev, l.hdr)
	if s != nil && err != nil {
		x.track(s) // aborting: sends the notice
	} else if err != nil && ctx.Err() != nil {
		x.mu.Lock()
		msg := x.abortMsg
		x.mu.Unlock()
		if msg != nil {
			x.r.tr.Abandon(l.prev, l.hdr, msg)
		}
	}
	if err != nil {
		return x.peerErr(ctx, l.prev, fmt.Errorf("accept lane %d: %w", l.k, err))
	}
	if !x.track(s) {
		return ctx.Err()
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	// On failure the stream is left to the abort, which sends a notice up
	// it before closing it.
	if err := l.recvAll(ctx, s); err != nil {
		if errors.Is(err, ErrZeroTotalWeight) {
			return err
		}
		return x.peerErr(ctx, l.prev, fmt.Errorf("receive lane %d: %w", l.k, err))
	}
	_ = s.SetReadDeadline(time.Now().Add(x.r.cfg.FrameTimeout))
	var one [1]byte
	if _, err := io.ReadFull(s, one[:]); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("%w: data after the last frame", ErrProtocol)
		}
		return x.peerErr(ctx, l.prev, fmt.Errorf("lane %d end: %w", l.k, err))
	}
	_ = s.Close()
	return nil
}

// recvAll reads the weights (if this lane carries them) and every chunk,
// reducing or storing each as the schedule says.
func (l *lane) recvAll(ctx context.Context, s Stream) error {
	x := l.x
	cfg := x.r.cfg
	if l.weighted {
		if err := l.recvWeights(s); err != nil {
			return err
		}
	}
	dt := x.opt.Wire
	last := l.sch.steps() - 1
	for t := 0; t <= last; t++ {
		seg, kind := l.sch.recvSeg(t), l.sch.kind(t)
		if kind == stepFinish {
			if err := waitClosed(ctx, x.postReady); err != nil {
				return err
			}
		}
		for c := range l.sch.numChunks(seg) {
			sp := l.sch.chunk(seg, c)
			lo, hi := l.off+sp.Off, l.off+sp.Off+sp.Len
			out := x.dst[lo:hi]
			_ = s.SetReadDeadline(time.Now().Add(cfg.FrameTimeout))
			var f forward
			if kind == stepGather && dt == Float32 {
				// Final float32 values: read straight into dst and
				// forward from there.
				f.b = f32Bytes(out)
				if err := readExact(s, f.b); err != nil {
					return fmt.Errorf("step %d chunk %d: %w", t, c, err)
				}
			} else {
				f.buf = x.getBuf()
				f.b = f32Bytes(*f.buf)[:dt.WireLen(sp.Len)]
				if err := readExact(s, f.b); err != nil {
					x.putBuf(f.buf)
					return fmt.Errorf("step %d chunk %d: %w", t, c, err)
				}
				switch kind {
				case stepAccumulate:
					accumulate(dt, f.b, x.src[lo:hi], x.scale)
				case stepFinish:
					finish(dt, out, x.src[lo:hi], f.b, x.scale, x.post)
				default:
					gather(dt, out, f.b)
				}
			}
			x.r.metrics.BytesReceived(l.k, len(f.b))
			if x.opt.Progress != nil {
				x.opt.Progress.Add(int64(len(f.b)))
			}
			switch {
			case t < last:
				l.fwd <- f // never blocks: capacity is every chunk
			case f.buf != nil:
				x.putBuf(f.buf)
			}
		}
	}
	return nil
}

// recvWeights gathers every member's weight round lane 0 and fixes the
// total (summed in ring order, so it is bit-identical everywhere).
func (l *lane) recvWeights(s Stream) error {
	x := l.x
	var b [8]byte
	for h := 0; h < x.n-1; h++ {
		_ = s.SetReadDeadline(time.Now().Add(x.r.cfg.FrameTimeout))
		if err := readExact(s, b[:]); err != nil {
			return fmt.Errorf("weight %d: %w", h, err)
		}
		w := decodeWeight(b[:])
		if math.IsNaN(w) || math.IsInf(w, 0) || w < 0 {
			return fmt.Errorf("%w: weight %v", ErrProtocol, w)
		}
		x.weights[l.sch.mod(x.rank-1-h)] = w
		l.wtok <- struct{}{}
	}
	total := 0.0
	for _, w := range x.weights {
		total += w
	}
	if total == 0 {
		return ErrZeroTotalWeight
	}
	x.total = total
	x.post = float32(1 / total)
	close(x.postReady)
	return nil
}

func waitClosed(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
