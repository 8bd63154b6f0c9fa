package allreduce

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"golang.org/x/time/rate"

	"github.com/ringmesh/ringmesh/internal/p2pconf"
)

// StreamTransport is the libp2p Transport: one stream per lane per ring
// edge per round, protocol ProtocolID, each lane of at least
// Config.DirectMinBytes upgraded to its own TCP connection (direct.go).
type StreamTransport struct {
	h     host.Host
	cfg   Config
	log   *slog.Logger
	inbox *inbox
	mode  string               // LaneStats.Mode
	sec   *libp2ptls.Transport // secures direct lanes; nil in plaintext or off
	ctx   context.Context      // ends at Close
	stop  context.CancelFunc
	lanes laneCounters

	mu        sync.Mutex
	closed    bool
	open      map[*trackedStream]struct{}
	conns     map[*laneConn]struct{}
	listeners map[string]net.Listener // by local IP
	// listenFailed is when a listen on a local IP last failed: lanes
	// arriving there stay on streams for laneListenRetry.
	listenFailed map[string]time.Time
	pending      map[[laneTokenLen]byte]*pendingLane
	unauth       map[string]int // inbound lane connections before their token, by IP
	unauthN      int
	// authing holds those connections, for Close to reset.
	authing map[*net.TCPConn]struct{}
	// expected counts the pending lane offers by the IP of the stream
	// they went out on: members' lane connections come from there and
	// are not held to the global cap that outsiders can fill.
	expected  map[string]int
	refuseLog rate.Sometimes        // refusal log lines: the first, then one per 10 s
	portsLog  rate.Sometimes        // out-of-ports warnings: the first, then one per minute
	failed    map[peer.ID]time.Time // last direct connection failure
	handles   sync.WaitGroup

	// dial connects a lane and listen opens a lane listener (tests
	// replace them to inject failures).
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	listen func(network, addr string) (net.Listener, error)
}

// Lane modes: LaneStats.Mode.
const (
	LaneModeTLS       = "tls"
	LaneModePlaintext = "plaintext"
	LaneModeOff       = "off"
)

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
		inbox:        newInbox(cfg, logger),
		mode:         LaneModeOff,
		open:         make(map[*trackedStream]struct{}),
		conns:        make(map[*laneConn]struct{}),
		listeners:    make(map[string]net.Listener),
		listenFailed: make(map[string]time.Time),
		pending:      make(map[[laneTokenLen]byte]*pendingLane),
		unauth:       make(map[string]int),
		authing:      make(map[*net.TCPConn]struct{}),
		expected:     make(map[string]int),
		refuseLog:    rate.Sometimes{First: 1, Interval: 10 * time.Second},
		portsLog:     rate.Sometimes{First: 1, Interval: portsWarnEvery},
		failed:       make(map[peer.ID]time.Time),
		dial:         (&net.Dialer{Timeout: laneDialTimeout}).DialContext,
		listen:       net.Listen,
	}
	t.ctx, t.stop = context.WithCancel(context.Background())
	switch {
	case cfg.DirectLanes && cfg.TrustedNetwork:
		t.mode = LaneModePlaintext
	case cfg.DirectLanes:
		sec, err := libp2ptls.New(libp2ptls.ID, h.Peerstore().PrivKey(h.ID()), nil)
		if err != nil {
			logger.Warn("direct lanes off: no TLS identity", "err", err)
			break
		}
		t.sec, t.mode = sec, LaneModeTLS
	}
	h.SetStreamHandler(protocol.ID(ProtocolID), t.handle)
	return t
}

// LaneStats reports how the lanes ran so far.
func (t *StreamTransport) LaneStats() LaneStats {
	return LaneStats{
		Mode:           t.mode,
		Direct:         t.lanes.direct.Load(),
		Fallback:       t.lanes.fallback.Load(),
		Stream:         t.lanes.stream.Load(),
		Refused:        t.lanes.refused.Load(),
		PortsExhausted: t.lanes.portsExhausted.Load(),
	}
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
	return t.takeLane(ctx, to, ts)
}

// Accept implements Transport.
func (t *StreamTransport) Accept(ctx context.Context, from peer.ID, h Header) (Stream, error) {
	s, err := t.inbox.accept(ctx, from, h)
	if err != nil || s == nil {
		return s, err
	}
	return t.offerLane(ctx, from, h, s.(*trackedStream))
}

// Abandon implements Transport.
func (t *StreamTransport) Abandon(from peer.ID, h Header, notice []byte) {
	t.inbox.abandon(from, h, notice)
}

// Close removes the handler, rejects held streams, closes the lane
// listeners, resets every open stream and lane connection (inbound ones
// still being authenticated too) and waits for running handlers. Rounds
// in progress fail.
func (t *StreamTransport) Close() error {
	t.h.RemoveStreamHandler(protocol.ID(ProtocolID))
	t.mu.Lock()
	t.closed = true
	open := make([]*trackedStream, 0, len(t.open))
	for ts := range t.open {
		open = append(open, ts)
	}
	conns := make([]*laneConn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.conns = make(map[*laneConn]struct{})
	lns := t.listeners
	t.listeners = make(map[string]net.Listener)
	// Inbound lane connections that have not presented a token (an
	// outsider's half-open ones among them) are reset now, not waited
	// for.
	authing := make([]*net.TCPConn, 0, len(t.authing))
	for raw := range t.authing {
		authing = append(authing, raw)
	}
	t.mu.Unlock()
	t.stop()
	for _, ln := range lns {
		if ln != nil {
			_ = ln.Close()
		}
	}
	t.inbox.close()
	for _, ts := range open {
		_ = ts.Stream.Reset()
	}
	for _, c := range conns {
		resetTCP(c.raw)
	}
	for _, raw := range authing {
		resetTCP(raw)
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
