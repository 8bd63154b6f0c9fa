package allreduce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/internal/p2pconf"
)

// ProtocolID is the libp2p protocol of all-reduce streams.
const ProtocolID = string(p2pconf.AllReduceProtocol)

// Stream is one direction-agnostic byte stream between two members, as
// libp2p's network.Stream provides it.
type Stream interface {
	io.Reader
	io.Writer
	// CloseWrite ends our direction; the peer reads EOF after the data.
	CloseWrite() error
	// CloseRead stops reading; nothing is sent to the peer.
	CloseRead() error
	// Close is CloseRead then CloseWrite.
	Close() error
	// Reset aborts both directions; the peer's reads and writes fail.
	Reset() error
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// Transport opens the streams of a round between ring neighbours. Both
// methods perform the header handshake (see the package doc): Dial sends h
// and waits for the receiver's verdict; Accept waits for the stream from
// `from` for h's round and lane, checks every header field against h,
// answers, and returns it (if ctx ends as the stream arrives, Accept may
// return the stream together with ctx's error; the caller owns it). Safe
// for concurrent use; both return promptly once ctx is done.
//
// Abandon is called when a round aborts before Accept returned a stream:
// the stream from `from` for h's round and lane, held now or arriving
// within HoldTimeout, is answered with notice (an abort control message)
// instead of a verdict, so its sender learns why at once.
type Transport interface {
	Dial(ctx context.Context, to peer.ID, h Header) (Stream, error)
	Accept(ctx context.Context, from peer.ID, h Header) (Stream, error)
	Abandon(from peer.ID, h Header, notice []byte)
}

// dialHandshake writes h on s and waits up to timeout for the verdict.
func dialHandshake(ctx context.Context, s Stream, h Header, timeout time.Duration) error {
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	fail := resetter(ctx, s)
	deadline := time.Now().Add(timeout)
	_ = s.SetWriteDeadline(deadline)
	if _, err := s.Write(AppendHeader(nil, h)); err != nil {
		return fail(fmt.Errorf("write header: %w", err))
	}
	_ = s.SetWriteDeadline(time.Time{})
	_ = s.SetReadDeadline(deadline)
	c, err := readControl(s)
	if err != nil {
		return fail(fmt.Errorf("read verdict: %w", noEOF(err)))
	}
	_ = s.SetReadDeadline(time.Time{})
	switch {
	case c.Type == ctrlAck:
		return nil
	case c.Type == ctrlReject && (c.Code == rejectHeader || c.Code == rejectSettings):
		err = mismatchErr("rejected by receiver: ", c.Reason, c.Code == rejectSettings)
	case c.Type == ctrlReject && c.Code == rejectNotStarted:
		err = fmt.Errorf("%w: rejected by receiver: %s", ErrRoundNotStarted, c.Reason)
	case c.Type == ctrlReject:
		err = fmt.Errorf("%w: rejected by receiver (code %d): %s", ErrUnexpectedStream, c.Code, c.Reason)
	case c.Type == ctrlAbort:
		_ = s.Close()
		return &abortVerdict{c}
	default:
		err = fmt.Errorf("%w: control message %d during handshake", ErrProtocol, c.Type)
	}
	return fail(err)
}

// resetter returns a function that resets s and returns err, or ctx's
// error once ctx has ended (the reset was then ours).
func resetter(ctx context.Context, s Stream) func(error) error {
	return func(err error) error {
		_ = s.Reset()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
}

// reject answers a held stream with a reject and closes it.
func reject(s Stream, code byte, reason string, timeout time.Duration) {
	answer(s, appendControl(nil, control{Type: ctrlReject, Code: code, Reason: reason}), timeout)
}

// answer writes one control message and closes the stream.
func answer(s Stream, msg []byte, timeout time.Duration) {
	_ = s.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := s.Write(msg); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// abandon answers the stream for k with notice, now if it is held, else
// when it arrives (within HoldTimeout).
func (b *inbox) abandon(from peer.ID, h Header, notice []byte) {
	k := inKey{from, h.key()}
	b.mu.Lock()
	hs := b.held[k]
	if hs != nil {
		delete(b.held, k)
		hs.timer.Stop()
	} else if !b.closed {
		now := time.Now()
		for gk, ts := range b.gone { // keep the map small
			if now.Sub(ts.at) >= b.cfg.HoldTimeout {
				delete(b.gone, gk)
			}
		}
		b.gone[k] = tombstone{notice: notice, at: now}
	}
	b.mu.Unlock()
	if hs != nil {
		answer(hs.s, notice, b.cfg.FrameTimeout)
	}
}

// abortVerdict is the answer to a dial that reached a member already
// aborting the round.
type abortVerdict struct{ c control }

func (a *abortVerdict) Error() string {
	return fmt.Sprintf("%v: receiver aborted the round: %s", ErrAborted, a.c.Reason)
}

func (a *abortVerdict) Unwrap() error { return ErrAborted }

type inKey struct {
	from peer.ID
	roundKey
}

type held struct {
	s     Stream
	h     Header
	timer *time.Timer
}

type acceptResult struct {
	hs  *held
	err error
}

// inbox holds inbound streams until the local AllReduce for their round
// asks for them (bounded in time by HoldTimeout and in count by MaxHeld),
// and hands them to waiting Accept calls. Both transports use it.
type inbox struct {
	cfg     Config
	log     *slog.Logger
	mu      sync.Mutex
	held    map[inKey]*held
	waiters map[inKey]chan acceptResult
	bad     map[peer.ID]badStream
	gone    map[inKey]tombstone
	closed  bool
}

// tombstone answers a late stream for an abandoned round and lane.
type tombstone struct {
	notice []byte
	at     time.Time
}

// badStream remembers that a peer's last stream was garbage, so a round
// waiting on that peer fails at once instead of timing out.
type badStream struct {
	err error
	at  time.Time
}

func newInbox(cfg Config, log *slog.Logger) *inbox {
	return &inbox{
		cfg:     cfg,
		log:     log,
		held:    make(map[inKey]*held),
		waiters: make(map[inKey]chan acceptResult),
		bad:     make(map[peer.ID]badStream),
		gone:    make(map[inKey]tombstone),
	}
}

// deliver reads an inbound stream's header and parks or hands it over. It
// blocks at most FrameTimeout (reading the header).
func (b *inbox) deliver(from peer.ID, s Stream) {
	_ = s.SetReadDeadline(time.Now().Add(b.cfg.FrameTimeout))
	h, err := ReadHeader(s)
	if err != nil {
		_ = s.Reset()
		b.log.Warn("dropped inbound stream", "peer", from, "err", err)
		if errors.Is(err, ErrBadHeader) {
			// Garbage, not an aborted dial: fail the round waiting on it.
			b.fail(from, err)
		}
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	k := inKey{from, h.key()}
	hs := &held{s: s, h: h}
	b.mu.Lock()
	if ch, ok := b.waiters[k]; ok {
		delete(b.waiters, k)
		b.mu.Unlock()
		ch <- acceptResult{hs: hs}
		return
	}
	if ts, ok := b.gone[k]; ok {
		delete(b.gone, k)
		b.mu.Unlock()
		if time.Since(ts.at) < b.cfg.HoldTimeout {
			answer(s, ts.notice, b.cfg.FrameTimeout)
		} else {
			reject(s, rejectNotStarted, "round not started", b.cfg.FrameTimeout)
		}
		return
	}
	code, reason := byte(0), ""
	switch {
	case b.closed:
		code, reason = rejectClosed, "transport closed"
	case b.held[k] != nil:
		// The sender opened a new stream for the same round and lane: it
		// abandoned the old one (an attempt retried over the same ring).
		// The newest wins; the old one is rejected.
		old := b.held[k]
		old.timer.Stop()
		delete(b.held, k)
		defer reject(old.s, rejectBusy, "replaced by a newer stream for the same round and lane", b.cfg.FrameTimeout)
	case len(b.held) >= b.cfg.MaxHeld:
		code, reason = rejectBusy, "too many held streams"
	}
	if code != 0 {
		b.mu.Unlock()
		b.log.Warn("rejected inbound stream", "peer", from, "step", h.Step, "reason", reason)
		reject(s, code, reason, b.cfg.FrameTimeout)
		return
	}
	hs.timer = time.AfterFunc(b.cfg.HoldTimeout, func() { b.expire(k, hs) })
	b.held[k] = hs
	b.mu.Unlock()
}

// expire rejects a stream held too long.
func (b *inbox) expire(k inKey, hs *held) {
	b.mu.Lock()
	if b.held[k] != hs {
		b.mu.Unlock()
		return
	}
	delete(b.held, k)
	b.mu.Unlock()
	b.log.Warn("rejected inbound stream", "peer", k.from, "step", k.step, "reason", "round not started")
	reject(hs.s, rejectNotStarted, "round not started", b.cfg.FrameTimeout)
}

// fail reports a garbage stream from a peer to every Accept waiting on it,
// or remembers it for the next one.
func (b *inbox) fail(from peer.ID, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	found := false
	for k, ch := range b.waiters {
		if k.from == from {
			delete(b.waiters, k)
			ch <- acceptResult{err: err}
			found = true
		}
	}
	if !found {
		b.bad[from] = badStream{err: err, at: time.Now()}
	}
}

// accept waits for the stream from `from` for want's round and lane, then
// checks the header and answers. If ctx ends just as the stream arrives it
// returns the (acked) stream with ctx's error, so the caller can tell the
// sender why the round ended.
func (b *inbox) accept(ctx context.Context, from peer.ID, want Header) (Stream, error) {
	k := inKey{from, want.key()}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	if hs := b.held[k]; hs != nil {
		delete(b.held, k)
		hs.timer.Stop()
		b.mu.Unlock()
		s, err := b.verdict(hs, want)
		if err == nil || errors.Is(err, ErrHeaderMismatch) {
			return s, err
		}
		// The sender reset this stream while it was held: it was from an
		// earlier try of the same round that the sender gave up. Wait for
		// the stream of its next try instead of failing this one.
		b.log.Debug("dropped stale held stream", "peer", from, "step", want.Step, "err", err)
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, ErrClosed
		}
	}
	if bad, ok := b.bad[from]; ok {
		delete(b.bad, from)
		if time.Since(bad.at) < b.cfg.HoldTimeout {
			b.mu.Unlock()
			return nil, bad.err
		}
	}
	ch := make(chan acceptResult, 1)
	b.waiters[k] = ch
	b.mu.Unlock()

	timer := time.NewTimer(b.cfg.StartTimeout)
	defer timer.Stop()
	var err error
	select {
	case res := <-ch:
		if res.err != nil {
			return nil, res.err
		}
		return b.verdict(res.hs, want)
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = fmt.Errorf("%w: no stream from %s within %v", ErrRoundNotStarted, from, b.cfg.StartTimeout)
	}
	b.mu.Lock()
	if b.waiters[k] == ch {
		delete(b.waiters, k)
	}
	b.mu.Unlock()
	select {
	case res := <-ch:
		if res.hs != nil && ctx.Err() != nil {
			// Acked, so the caller can send its abort notice on it.
			if s, verr := b.verdict(res.hs, want); verr == nil {
				return s, err
			}
		} else if res.hs != nil {
			_ = res.hs.s.Reset()
		}
	default:
	}
	return nil, err
}

// verdict compares a stream's header with the expected one and answers.
func (b *inbox) verdict(hs *held, want Header) (Stream, error) {
	if m, settings := mismatch(want, hs.h); m != "" {
		code := byte(rejectHeader)
		if settings {
			code = rejectSettings
		}
		reject(hs.s, code, m, b.cfg.FrameTimeout)
		return nil, mismatchErr("", m, settings)
	}
	_ = hs.s.SetWriteDeadline(time.Now().Add(b.cfg.FrameTimeout))
	if _, err := hs.s.Write([]byte{ctrlAck}); err != nil {
		_ = hs.s.Reset()
		return nil, fmt.Errorf("write ack: %w", err)
	}
	_ = hs.s.SetWriteDeadline(time.Time{})
	return hs.s, nil
}

// close rejects every held stream and fails every waiting Accept.
func (b *inbox) close() {
	b.mu.Lock()
	b.closed = true
	hs := b.held
	b.held = make(map[inKey]*held)
	for k, ch := range b.waiters {
		delete(b.waiters, k)
		ch <- acceptResult{err: ErrClosed}
	}
	b.mu.Unlock()
	for _, h := range hs {
		h.timer.Stop()
		_ = h.s.Reset()
	}
}
