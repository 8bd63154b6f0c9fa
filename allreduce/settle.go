package allreduce

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Failure handling. The first lane error starts the end of the round.
// Errors are ranked: a zero total weight (every member sees it), a header mismatch (a direct verdict) over an abort
// notice (a neighbour saying which member the failure started at) over a
// plain stream failure (blames the neighbour) over our own cancellation.
// A failure seen on an outbound stream (dial, write, or the receiver's
// side of it reset) is direct: a member that aborts never resets the
// streams it receives on (it sends its notice there and closes them), so
// the receiver is gone or the link is broken; the round aborts at once. A
// failure seen on an inbound stream is ambiguous (an aborting neighbour
// resets its outbound streams right after sending its notice on the
// others), so it waits NoticeGrace for a notice first. Then
// the member aborts: it sends a notice naming the origin back up every
// inbound stream (the only direction it may write at any time), closes
// them and resets the rest, so both neighbours, and from them everyone,
// stop promptly.

func errRank(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return 1
	case errors.Is(err, ErrZeroTotalWeight):
		return 5 // every member finds it on its own
	case errors.Is(err, ErrHeaderMismatch):
		return 4
	case errors.Is(err, ErrAborted):
		return 3
	}
	return 2
}

func better(a, b error) error {
	if errRank(b) > errRank(a) {
		return b
	}
	return a
}

// settle collects lane errors until every goroutine has returned.
func (x *run) settle(parent context.Context, cancel context.CancelFunc, errc <-chan error, done <-chan struct{}) error {
	var best error
	var graceC <-chan time.Time
	aborted := false
	abort := func() {
		if !aborted {
			aborted = true
			x.abort(best)
			cancel()
		}
	}
	for {
		select {
		case err := <-errc:
			best = better(best, err)
			switch {
			case aborted:
			case errRank(best) >= 3 || isDirect(err) || x.r.cfg.NoticeGrace == 0 || parent.Err() != nil:
				abort()
			case graceC == nil:
				t := time.NewTimer(x.r.cfg.NoticeGrace)
				defer t.Stop()
				graceC = t.C
			}
		case <-graceC:
			abort()
		case <-done:
			for more := true; more; {
				select {
				case err := <-errc:
					best = better(best, err)
				default:
					more = false
				}
			}
			if best == nil {
				return nil
			}
			abort()
			if errRank(best) == 1 && parent.Err() != nil {
				return fmt.Errorf("allreduce: round %s: %w", x.round, parent.Err())
			}
			if d, ok := best.(directErr); ok {
				return d.error
			}
			return best
		}
	}
}

// abort sends a notice naming the failure's origin up every inbound stream
// and closes them; cancel (by the caller) then resets the outbound ones.
func (x *run) abort(cause error) {
	origin, reason := x.self, "aborted"
	var pe *PeerError
	if errors.As(cause, &pe) {
		origin = pe.Peer
	}
	if cause != nil {
		reason = cause.Error()
	}
	x.mu.Lock()
	x.aborting = true
	in := x.inbound
	x.inbound = nil
	x.mu.Unlock()
	msg := AppendControl(nil, control{Type: ctrlAbort, Origin: string(origin), Reason: reason})
	deadline := time.Now().Add(min(x.r.cfg.FrameTimeout, time.Second))
	for _, s := range in {
		_ = s.SetWriteDeadline(deadline)
		if _, err := s.Write(msg); err != nil {
			_ = s.Reset()
			continue
		}
		_ = s.Close()
	}
	x.r.log.Info("round aborted", "round", x.round.String(), "step", x.round.Step, "peer", origin, "err", cause)
}

// directErr marks a failure seen on an outbound stream.
type directErr struct{ error }

func (d directErr) Unwrap() error { return d.error }

func isDirect(err error) bool {
	_, ok := err.(directErr)
	return ok
}

// direct marks err (if it is a peer failure, not our own end) as direct.
func direct(err error) error {
	var pe *PeerError
	if errors.As(err, &pe) && !errors.Is(err, ErrAborted) {
		return directErr{err}
	}
	return err
}
