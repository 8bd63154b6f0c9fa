package allreduce

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Failure handling. The first lane error starts the end of the round.
// Errors are ranked: a zero total weight (every member finds it), a header
// mismatch (a direct verdict), an abort notice (a neighbour saying which
// member the failure started at), a direct failure, an ambiguous failure
// (both blame the neighbour), our own cancellation.
//
// A failure seen on an outbound stream (unreachable, write failed, the
// receiver's side reset) is direct: a member that aborts never resets the
// streams it receives on (it sends its notice there and closes them), so
// the receiver is gone or the link is broken; the round aborts at once. A
// failure seen on an inbound stream is ambiguous (an aborting neighbour
// resets its outbound streams right after sending its notice on the
// others), so it waits NoticeGrace for a notice first. Then the member
// aborts: it sends a notice naming the origin back up every inbound stream
// (the only direction it may write at any time), closes them and resets
// the rest, so both neighbours, and from them everyone, stop promptly.
//
// Attribution is best effort while streams are still being opened: a
// member that aborts during a handshake resets that stream, and its
// neighbour then blames it after NoticeGrace unless a notice arrives.

func errRank(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return 1
	case errors.Is(err, ErrZeroTotalWeight):
		return 6 // every member finds it on its own
	case errors.Is(err, ErrAborted):
		return 4
	case errors.Is(err, ErrHeaderMismatch):
		return 5
	case isDirect(err):
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
			case errRank(best) >= 3 || x.r.cfg.NoticeGrace == 0 || parent.Err() != nil:
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
	code := byte(causeOther)
	switch {
	case errors.Is(cause, ErrZeroTotalWeight):
		code = causeZeroWeight
	case errors.Is(cause, ErrSettingsMismatch):
		code = causeSettings
	case errors.Is(cause, ErrHeaderMismatch):
		code = causeHeader
	}
	msg := appendControl(nil, control{Type: ctrlAbort, Code: code, Origin: string(origin), Reason: reason})
	x.mu.Lock()
	x.aborting = true
	x.abortMsg = msg
	in := x.inbound
	x.inbound = nil
	x.mu.Unlock()
	for _, s := range in {
		x.notify(s, msg)
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

// notify sends an abort notice up an inbound stream and closes it.
func (x *run) notify(s Stream, msg []byte) {
	_ = s.SetWriteDeadline(time.Now().Add(min(x.r.cfg.FrameTimeout, time.Second)))
	if _, err := s.Write(msg); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// abortedBy turns an abort notice into the error the member returns.
func (x *run) abortedBy(from peer.ID, c control) error {
	switch c.Code {
	case causeZeroWeight:
		return ErrZeroTotalWeight
	case causeHeader:
		return x.noticeErr(from, c, ErrHeaderMismatch)
	case causeSettings:
		return x.noticeErr(from, c, mismatchErr("", "", true))
	}
	return x.noticeErr(from, c, nil)
}

func (x *run) noticeErr(from peer.ID, c control, kind error) error {
	origin, err := peer.IDFromBytes([]byte(c.Origin))
	if err != nil || origin == x.self {
		origin = from // a notice blaming us says only that from gave up
	}
	if kind != nil {
		return &PeerError{Peer: origin, Round: x.round, Err: fmt.Errorf("%w by %s (%w): %s", ErrAborted, from, kind, c.Reason)}
	}
	return &PeerError{Peer: origin, Round: x.round, Err: fmt.Errorf("%w by %s: %s", ErrAborted, from, c.Reason)}
}
