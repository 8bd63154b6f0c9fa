package allreduce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// In-memory transport for tests: members of a MemNetwork exchange streams
// built from bounded byte pipes (so flow control and blocking behave like
// a real stream), with fault hooks.

// Errors of in-memory streams.
var (
	ErrMemReset    = errors.New("allreduce: mem stream reset")
	errMemDeadline = fmt.Errorf("allreduce: mem stream: %w", os.ErrDeadlineExceeded)
)

// MemHooks inject faults into a MemNetwork. Hooks run on the writing
// goroutine without locks held; they must be safe for concurrent use.
type MemHooks struct {
	// BeforeWrite runs before every write from `from` to `to`. It may sleep
	// (delay) or return drop=true to discard the bytes silently.
	BeforeWrite func(from, to peer.ID, b []byte) (drop bool)
}

// MemNetwork connects MemTransports in one process.
type MemNetwork struct {
	cfg    Config
	log    *slog.Logger
	window int

	mu      sync.Mutex
	members map[peer.ID]*MemTransport
	killed  map[peer.ID]bool
	cut     map[[2]peer.ID]bool
	streams map[*memStream]struct{}
	hooks   MemHooks
	wg      sync.WaitGroup // inbound deliveries
}

// NewMemNetwork returns an empty network whose inboxes use cfg's limits.
// window is each stream direction's buffer in bytes (flow-control window).
func NewMemNetwork(cfg Config, window int, logger *slog.Logger) *MemNetwork {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &MemNetwork{
		cfg: cfg, log: logger, window: window,
		members: make(map[peer.ID]*MemTransport),
		killed:  make(map[peer.ID]bool),
		cut:     make(map[[2]peer.ID]bool),
		streams: make(map[*memStream]struct{}),
	}
}

// MemTransport is one member's Transport on a MemNetwork.
type MemTransport struct {
	net   *MemNetwork
	self  peer.ID
	inbox *inbox
}

var _ Transport = (*MemTransport)(nil)

// Transport returns id's transport, creating it on first use.
func (n *MemNetwork) Transport(id peer.ID) *MemTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if t, ok := n.members[id]; ok {
		return t
	}
	t := &MemTransport{net: n, self: id, inbox: newInbox(n.cfg, n.log.With("peer", id))}
	n.members[id] = t
	return t
}

// SetHooks replaces the fault hooks.
func (n *MemNetwork) SetHooks(h MemHooks) {
	n.mu.Lock()
	n.hooks = h
	n.mu.Unlock()
}

// Kill makes id unreachable and resets every stream it has, as if its
// process died.
func (n *MemNetwork) Kill(id peer.ID) {
	n.mu.Lock()
	n.killed[id] = true
	t := n.members[id]
	n.mu.Unlock()
	if t != nil {
		t.inbox.close()
	}
	n.resetWhere(func(s *memStream) bool { return s.local == id || s.remote == id })
}

// Partition cuts every link between a member of a and a member of b and
// resets the streams crossing the cut.
func (n *MemNetwork) Partition(a, b []peer.ID) {
	n.mu.Lock()
	for _, p := range a {
		for _, q := range b {
			n.cut[[2]peer.ID{p, q}] = true
			n.cut[[2]peer.ID{q, p}] = true
		}
	}
	n.mu.Unlock()
	n.resetWhere(func(s *memStream) bool { return n.isCut(s.local, s.remote) })
}

// Heal removes every partition.
func (n *MemNetwork) Heal() {
	n.mu.Lock()
	n.cut = make(map[[2]peer.ID]bool)
	n.mu.Unlock()
}

func (n *MemNetwork) isCut(a, b peer.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cut[[2]peer.ID{a, b}] || n.killed[a] || n.killed[b]
}

func (n *MemNetwork) resetWhere(match func(*memStream) bool) {
	n.mu.Lock()
	var victims []*memStream
	for s := range n.streams {
		victims = append(victims, s)
	}
	n.mu.Unlock()
	for _, s := range victims {
		if match(s) {
			_ = s.Reset()
		}
	}
}

// Close resets every stream and waits for pending deliveries.
func (n *MemNetwork) Close() {
	n.mu.Lock()
	members := make([]*MemTransport, 0, len(n.members))
	for _, t := range n.members {
		members = append(members, t)
	}
	n.mu.Unlock()
	for _, t := range members {
		t.inbox.close()
	}
	n.resetWhere(func(*memStream) bool { return true })
	n.wg.Wait()
}

// Dial implements Transport.
func (t *MemTransport) Dial(ctx context.Context, to peer.ID, h Header) (Stream, error) {
	n := t.net
	if n.isCut(t.self, to) {
		return nil, fmt.Errorf("%w: %s", ErrPeerUnreachable, to)
	}
	n.mu.Lock()
	dst := n.members[to]
	if dst == nil {
		n.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrPeerUnreachable, to)
	}
	ab, ba := newPipe(n.window), newPipe(n.window)
	local := &memStream{net: n, local: t.self, remote: to, rd: ba, wr: ab}
	remote := &memStream{net: n, local: to, remote: t.self, rd: ab, wr: ba}
	n.streams[local] = struct{}{}
	n.streams[remote] = struct{}{}
	n.wg.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		dst.inbox.deliver(t.self, remote)
	}()
	if err := dialHandshake(ctx, local, h, n.cfg.StartTimeout); err != nil {
		return nil, err
	}
	return local, nil
}

// Accept implements Transport.
func (t *MemTransport) Accept(ctx context.Context, from peer.ID, h Header) (Stream, error) {
	return t.inbox.accept(ctx, from, h)
}

// Abandon implements Transport.
func (t *MemTransport) Abandon(from peer.ID, h Header, notice []byte) {
	t.inbox.abandon(from, h, notice)
}

// memStream is one end of an in-memory stream.
type memStream struct {
	net           *MemNetwork
	local, remote peer.ID
	rd, wr        *pipe

	mu            sync.Mutex
	readDeadline  time.Time
	writeDeadline time.Time
}

func (s *memStream) Read(b []byte) (int, error) {
	s.mu.Lock()
	d := s.readDeadline
	s.mu.Unlock()
	return s.rd.read(b, d)
}

func (s *memStream) Write(b []byte) (int, error) {
	s.net.mu.Lock()
	hook := s.net.hooks.BeforeWrite
	dead := s.net.killed[s.local] || s.net.killed[s.remote] || s.net.cut[[2]peer.ID{s.local, s.remote}]
	s.net.mu.Unlock()
	if dead { // nothing more crosses a cut or leaves a killed member
		s.rd.reset()
		s.wr.reset()
		return 0, ErrMemReset
	}
	if hook != nil && hook(s.local, s.remote, b) {
		return len(b), nil
	}
	s.mu.Lock()
	d := s.writeDeadline
	s.mu.Unlock()
	return s.wr.write(b, d)
}

func (s *memStream) CloseWrite() error { s.wr.closeWrite(); s.forgetIfDone(); return nil }

func (s *memStream) CloseRead() error { s.rd.closeRead(); s.forgetIfDone(); return nil }

func (s *memStream) Close() error {
	s.rd.closeRead()
	s.wr.closeWrite()
	s.forgetIfDone()
	return nil
}

// Reset fails both directions for both ends, unless this end is already
// closed both ways (then, like yamux, it is a no-op).
func (s *memStream) Reset() error {
	if s.rd.readClosed() && s.wr.writeClosed() {
		return nil
	}
	s.rd.reset()
	s.wr.reset()
	s.forget()
	return nil
}

func (s *memStream) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	s.readDeadline = t
	s.mu.Unlock()
	return nil
}

func (s *memStream) SetWriteDeadline(t time.Time) error {
	s.mu.Lock()
	s.writeDeadline = t
	s.mu.Unlock()
	return nil
}

func (s *memStream) forgetIfDone() {
	if s.rd.readClosed() && s.wr.writeClosed() {
		s.forget()
	}
}

func (s *memStream) forget() {
	s.net.mu.Lock()
	delete(s.net.streams, s)
	s.net.mu.Unlock()
}
