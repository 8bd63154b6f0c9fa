package mesh

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"golang.org/x/sync/errgroup"
)

const (
	// maxProbes bounds concurrent probe rounds, and separately the indirect
	// probes this node runs for others; more wait for the timers.
	maxProbes = 64
	// capsRefresh is how often capabilities (GPU utilisation) are re-read.
	capsRefresh = 30 * time.Second
	// leaveTimeout bounds publishing the leave notice.
	leaveTimeout = 2 * time.Second
	// leaveLinger lets gossipsub write the leave notice to its peers before
	// Run returns and the caller closes the host (pubsub has no flush).
	leaveLinger = 250 * time.Millisecond
	// redialDead is how often dead members are redialled (until forgotten).
	redialDead = 5 * time.Second
	// memberAddrTTL is how long addresses learned from heartbeats stay in
	// the peerstore.
	memberAddrTTL = 10 * time.Minute
)

// loopState is owned by the loop goroutine: the membership table and the
// means to carry out its effects.
type loopState struct {
	m      *Mesh
	table  *table
	ctx    context.Context
	g      *errgroup.Group
	probes int // probes in flight
	out    *outbox
}

// outbox carries requests to the sender goroutine, which alone publishes.
type outbox struct {
	notices chan failureNotice
	refute  chan uint64
	dials   chan peer.AddrInfo
}

// Run runs the membership protocol: heartbeats, the failure detector, the
// topic readers and discovery. It returns after ctx is done and every
// goroutine it started has exited, having announced a graceful leave. It
// returns nil on that clean shutdown, an error if something failed to start.
// Run may be called once.
func (m *Mesh) Run(ctx context.Context) error {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if !m.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer m.closeWatchers()
	hbSub, err := m.hbTopic.Subscribe(pubsub.WithBufferSize(256))
	if err != nil {
		return fmt.Errorf("subscribe heartbeat: %w", err)
	}
	defer hbSub.Cancel()
	fSub, err := m.fTopic.Subscribe(pubsub.WithBufferSize(256))
	if err != nil {
		return fmt.Errorf("subscribe failure: %w", err)
	}
	defer fSub.Cancel()

	g, gctx := errgroup.WithContext(ctx)
	out := &outbox{
		notices: make(chan failureNotice, 64),
		refute:  make(chan uint64, 8),
		dials:   make(chan peer.AddrInfo, 64),
	}
	ls := &loopState{m: m, table: newTable(m.self, m.cfg, m.metrics), ctx: gctx, g: g, out: out}
	m.host.SetStreamHandler(probeProtocol, m.probeHandler(gctx))
	defer m.host.RemoveStreamHandler(probeProtocol)
	notifiee := &network.NotifyBundle{DisconnectedF: func(_ network.Network, c network.Conn) {
		m.disconnected(c.RemotePeer())
	}}
	m.host.Network().Notify(notifiee)
	defer m.host.Network().StopNotify(notifiee)

	g.Go(func() error { return ls.loop() })
	g.Go(func() error { return m.sender(gctx, out) })
	g.Go(func() error { return m.readHeartbeats(gctx, hbSub, out) })
	g.Go(func() error { return m.readFailures(gctx, fSub) })
	g.Go(func() error { return m.dialer(gctx, g, out.dials) })
	m.startDiscovery(gctx, g, out.dials)
	err = g.Wait()
	m.leave()
	if ctx.Err() != nil && err == ctx.Err() {
		err = nil
	}
	return err
}

// disconnected probes p if no connection to it is left.
func (m *Mesh) disconnected(p peer.ID) {
	m.post(func(s *loopState) {
		if m.host.Network().Connectedness(p) != network.Connected {
			s.apply(s.table.check(p, time.Now()))
		}
	})
}

// loop owns the membership table: it applies events and timer ticks.
func (s *loopState) loop() error {
	tick := time.NewTicker(max(s.m.cfg.HeartbeatInterval/4, 10*time.Millisecond))
	defer tick.Stop()
	var lastRedial time.Time
	for {
		select {
		case <-s.ctx.Done():
			return nil
		case f := <-s.m.events:
			f(s)
		case now := <-tick.C:
			s.apply(s.table.tick(now))
			if now.Sub(lastRedial) >= redialDead {
				lastRedial = now
				s.redialDead()
			}
		}
	}
}

// redialDead asks the dialer to reconnect to dead members it still knows
// addresses of: after a partition heals, their heartbeats (at the declared
// dead incarnation) make us re-announce the death, they refute, and both
// sides see each other alive again.
func (s *loopState) redialDead() {
	for _, ai := range s.table.deadAddrs() {
		if s.m.host.Network().Connectedness(ai.ID) == network.Connected {
			continue
		}
		select {
		case s.out.dials <- ai:
		default:
			return
		}
	}
}

// apply carries out the table's effects and refreshes the view.
func (s *loopState) apply(fx effects) {
	if f := fx.dropped; f != nil {
		s.m.logger.Warn("failure notice dropped: implausible incarnation", "author", f.Sender,
			"peer", f.Subject, "incarnation", f.Incarnation)
	}
	for _, n := range fx.notices {
		s.m.logger.Info("member state", "peer", n.Subject, "state", n.Kind, "incarnation", n.Incarnation)
		select {
		case s.out.notices <- n:
		default:
			s.m.logger.Warn("failure notice dropped: sender busy", "peer", n.Subject)
		}
	}
	for _, p := range fx.probes {
		if !s.probe(p) {
			s.table.probeDropped(p.id)
		}
	}
	if fx.refute > 0 {
		select {
		case s.out.refute <- fx.refute:
		default:
		}
	}
	s.m.setMembers(s.table.list(), fx.changed)
}

// probe runs one probe round of p (direct, then through up to
// indirectChecks random helpers) and feeds the result back. It reports false
// when too many rounds are in flight (the timers then decide).
func (s *loopState) probe(p probeReq) bool {
	if s.probes >= maxProbes {
		return false
	}
	s.probes++
	helpers := slices.Clone(p.helpers)
	rand.Shuffle(len(helpers), func(i, j int) { helpers[i], helpers[j] = helpers[j], helpers[i] })
	helpers = helpers[:min(len(helpers), indirectChecks)]
	m := s.m
	s.g.Go(func() error {
		r := m.probeRound(s.ctx, p.id, helpers)
		if s.ctx.Err() != nil {
			return nil
		}
		select { // blocking: a probe result must not be lost
		case m.events <- func(s *loopState) {
			s.probes--
			s.apply(s.table.probed(p, r, time.Now()))
		}:
		case <-s.ctx.Done():
		}
		return nil
	})
	return true
}

// readHeartbeats feeds accepted heartbeats to the loop and asks the dialer
// to connect to members we are not connected to (peer exchange).
func (m *Mesh) readHeartbeats(ctx context.Context, sub *pubsub.Subscription, out *outbox) error {
	for {
		msg, err := sub.Next(ctx)
		if err != nil {
			return nil // ctx done or subscription cancelled
		}
		h, ok := msg.ValidatorData.(*heartbeat)
		if !ok || h.Sender == m.self {
			continue
		}
		if h.State == Alive && len(h.Addrs) > 0 {
			m.host.Peerstore().AddAddrs(h.Sender, h.Addrs, memberAddrTTL)
			if m.host.Network().Connectedness(h.Sender) != network.Connected {
				select {
				case out.dials <- peer.AddrInfo{ID: h.Sender, Addrs: h.Addrs}:
				default:
				}
			}
		}
		now := time.Now()
		select {
		case m.events <- func(s *loopState) { s.apply(s.table.heartbeat(h, now)) }:
		case <-ctx.Done():
			return nil
		}
	}
}

// readFailures feeds accepted failure notices to the loop.
func (m *Mesh) readFailures(ctx context.Context, sub *pubsub.Subscription) error {
	for {
		msg, err := sub.Next(ctx)
		if err != nil {
			return nil
		}
		f, ok := msg.ValidatorData.(*failureNotice)
		if !ok || f.Sender == m.self {
			continue
		}
		select {
		case m.events <- func(s *loopState) { s.apply(s.table.failure(f, time.Now())) }:
		case <-ctx.Done():
			return nil
		}
	}
}

// sender alone publishes: heartbeats every HeartbeatInterval, failure
// notices, and refutations (incarnation bump, then an immediate heartbeat).
//
// Refutations are paced: at most one per HeartbeatInterval, the notices in
// between answered together by the next one (past the highest incarnation
// they named). A member that keeps accusing us at each new incarnation
// then costs one bump, one fsync and one heartbeat per interval, not one
// per notice; and it is one vote, which the others' probes outweigh.
func (m *Mesh) sender(ctx context.Context, out *outbox) error {
	hb := time.NewTicker(m.cfg.HeartbeatInterval)
	defer hb.Stop()
	caps := time.NewTicker(capsRefresh)
	defer caps.Stop()
	pace := time.NewTimer(0)
	defer pace.Stop()
	<-pace.C
	var pending uint64 // highest incarnation named by unanswered notices; 0: none
	var paced bool     // pace is armed
	var last time.Time // of the last refutation
	refute := func() {
		if m.refute(pending) {
			last = time.Now()
			m.publishHeartbeat(ctx, Alive)
		}
		pending = 0
	}
	m.publishHeartbeat(ctx, Alive)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hb.C:
			m.publishHeartbeat(ctx, Alive)
		case n := <-out.notices:
			m.publishFailure(ctx, &n)
		case inc := <-out.refute:
			if !m.plausibleSelf(inc) {
				continue // one implausible notice must not mask the others
			}
			pending = max(pending, inc)
			if wait := m.cfg.HeartbeatInterval - time.Since(last); wait > 0 {
				if !paced {
					paced = true
					pace.Reset(wait)
				}
				continue
			}
			refute()
		case <-pace.C:
			paced = false
			refute()
		case <-caps.C:
			c := DetectCapabilities(m.cfg.NVML)
			m.mu.Lock()
			m.caps = c
			m.mu.Unlock()
		}
	}
}

// refute raises the incarnation to max(current, inc)+1 (in memory and on
// disk) after a notice declared this node suspect or dead at inc. It reports
// whether it did: a notice about an older incarnation needs no refutation,
// and one implausibly far above ours (see plausibleIncarnation) is dropped
// and counted, so the increment can never wrap.
func (m *Mesh) refute(inc uint64) bool {
	m.incMu.Lock()
	defer m.incMu.Unlock()
	cur := m.incarnation.Load()
	if !m.plausibleSelf(inc) {
		return false
	}
	if inc < cur {
		return false
	}
	next := inc + 1 // inc >= cur, and inc < MaxUint64 (plausible)
	if err := writeIncarnation(m.cfg.DataDir, next); err != nil {
		// Still refute in memory: being alive matters more now; the next
		// start reads the older value and bumps past it only if no notice
		// reached that value, which a later refutation fixes.
		m.logger.Warn("persist incarnation failed", "err", err)
	}
	m.incarnation.Store(next)
	m.logger.Info("refuted failure notice", "incarnation", next)
	return true
}

// plausibleSelf reports whether a notice about this node at inc is
// plausible (see plausibleIncarnation); it drops and counts one that is not.
func (m *Mesh) plausibleSelf(inc uint64) bool {
	cur := m.incarnation.Load()
	if plausibleIncarnation(cur, inc) {
		return true
	}
	m.metrics.InvalidMessage(reasonImplausibleIncarnation)
	m.logger.Warn("failure notice about self dropped: implausible incarnation", "incarnation", inc, "current", cur)
	return false
}

func (m *Mesh) publishHeartbeat(ctx context.Context, state State) {
	m.mu.Lock()
	h := heartbeat{
		Mesh: m.cfg.Mesh, Sender: m.self, Incarnation: m.incarnation.Load(), State: state,
		Addrs: advertiseAddrs(m.host.Addrs()), Caps: m.caps, Payload: m.payload,
	}
	m.mu.Unlock()
	b, err := encodeHeartbeat(nil, &h)
	if err == nil {
		err = m.hbTopic.Publish(ctx, b)
	}
	if err != nil && ctx.Err() == nil {
		m.logger.Warn("publish heartbeat failed", "err", err)
	}
}

func (m *Mesh) publishFailure(ctx context.Context, f *failureNotice) {
	b, err := encodeFailure(nil, f)
	if err == nil {
		err = m.fTopic.Publish(ctx, b)
	}
	if err != nil && ctx.Err() == nil {
		m.logger.Warn("publish failure notice failed", "peer", f.Subject, "err", err)
	}
}

// advertiseAddrs drops loopback addresses when there are others: a remote
// member can only reach those.
func advertiseAddrs(addrs []multiaddr.Multiaddr) []multiaddr.Multiaddr {
	out := make([]multiaddr.Multiaddr, 0, len(addrs))
	for _, a := range addrs {
		if !manet.IsIPLoopback(a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return addrs
	}
	return out
}

// leave announces a graceful leave: a Left notice and a Left heartbeat. A
// closed mesh (crash-like Close before Run ended) announces nothing.
func (m *Mesh) leave() {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	m.publishFailure(ctx, &failureNotice{
		Mesh: m.cfg.Mesh, Sender: m.self, Kind: Left, Subject: m.self, Incarnation: m.incarnation.Load(),
	})
	m.publishHeartbeat(ctx, Left)
	m.logger.Info("left mesh", "incarnation", m.incarnation.Load())
	t := time.NewTimer(leaveLinger)
	defer t.Stop()
	<-t.C
}
