package allreduce

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ringmesh/ringmesh/internal/p2pconf"
)

// StreamTransport is the libp2p Transport: one stream per lane per ring
// edge per round, protocol ProtocolID.
type StreamTransport struct {
	h     host.Host
	cfg   Config
	log   *slog.Logger
	inbox *inbox

	mu      sync.Mutex
	closed  bool
	open    map[*trackedStream]struct{}
	handles sync.WaitGroup
}

var _ Transport = (*StreamTransport)(nil)

// NewStreamTransport registers the ProtocolID handler on h. Inbound
// streams are held (at most cfg.MaxHeld, for cfg.HoldTimeout) until the
// local AllReduce for their round accepts them. A nil logger discards.
func NewStreamTransport(h host.Host, cfg Config, logger *slog.Logger) *StreamTransport {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "allreduce")
	t := &StreamTransport{
		h: h, cfg: cfg, log: logger,
		inbox: newInbox(cfg, logger),
		open:  make(map[*trackedStream]struct{}),
	}
	h.SetStreamHandler(protocol.ID(ProtocolID), t.handle)
	return t
}

func (t *StreamTransport) handle(s network.Stream) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = s.Reset()
		return
	}
	t.handles.Add(1)
	ts := t.track(s)
	t.mu.Unlock()
	defer t.handles.Done()
	t.inbox.deliver(s.Conn().RemotePeer(), ts)
}

// track wraps s so Close can reset it; t.mu must be held.
func (t *StreamTransport) track(s network.Stream) *trackedStream {
	ts := &trackedStream{Stream: s, t: t}
	t.open[ts] = struct{}{}
	return ts
}

func (t *StreamTransport) forget(ts *trackedStream) {
	t.mu.Lock()
	delete(t.open, ts)
	t.mu.Unlock()
}

// Dial implements Transport. The peer's addresses must be known to the
// host (connected or in its peerstore).
func (t *StreamTransport) Dial(ctx context.Context, to peer.ID, h Header) (Stream, error) {
	dctx, cancel := context.WithTimeout(ctx, t.cfg.StartTimeout)
	defer cancel()
	if t.h.Network().Connectedness(to) != network.Connected {
		// The rounds pace their attempts.
		p2pconf.ClearDialBackoff(t.h.Network(), to)
	}
	s, err := t.h.NewStream(dctx, to, protocol.ID(ProtocolID))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %w", ErrPeerUnreachable, err)
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = s.Reset()
		return nil, ErrClosed
	}
	ts := t.track(s)
	t.mu.Unlock()
	if err := dialHandshake(ctx, ts, h, t.cfg.StartTimeout); err != nil {
		return nil, err
	}
	return ts, nil
}

// Accept implements Transport.
func (t *StreamTransport) Accept(ctx context.Context, from peer.ID, h Header) (Stream, error) {
	return t.inbox.accept(ctx, from, h)
}

// Abandon implements Transport.
func (t *StreamTransport) Abandon(from peer.ID, h Header, notice []byte) {
	t.inbox.abandon(from, h, notice)
}

// Close removes the handler, rejects held streams, resets every open
// stream and waits for running handlers. Rounds in progress fail.
func (t *StreamTransport) Close() error {
	t.h.RemoveStreamHandler(protocol.ID(ProtocolID))
	t.mu.Lock()
	t.closed = true
	open := make([]*trackedStream, 0, len(t.open))
	for ts := range t.open {
		open = append(open, ts)
	}
	t.mu.Unlock()
	t.inbox.close()
	for _, ts := range open {
		_ = ts.Stream.Reset()
	}
	t.handles.Wait()
	return nil
}

// trackedStream forgets itself when closed or reset.
type trackedStream struct {
	network.Stream
	t *StreamTransport
}

func (s *trackedStream) Close() error {
	s.t.forget(s)
	return s.Stream.Close()
}

func (s *trackedStream) Reset() error {
	s.t.forget(s)
	return s.Stream.Reset()
}
