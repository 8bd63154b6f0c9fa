package mesh

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v4"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	"golang.org/x/sync/errgroup"

	"github.com/ringmesh/ringmesh/internal/p2pconf"
)

const (
	// maxDials bounds concurrent outbound dials of discovered peers.
	maxDials = 8
	// dialTimeout bounds one dial.
	dialTimeout = 10 * time.Second
	// redialAfter is the least time between two dials of the same peer.
	redialAfter = 2 * time.Second
	// joinBackoffMin/Max bound the retry delay of a join address.
	joinBackoffMin = 100 * time.Millisecond
	joinBackoffMax = 10 * time.Second
	// joinWarnEvery is how often a join address that keeps failing is
	// warned about again; joinForeignWarnEvery when it answers but as
	// another mesh (another secret), which only the operator can fix.
	joinWarnEvery        = time.Minute
	joinForeignWarnEvery = 10 * time.Second
	// dhtInterval is how often the DHT is used to advertise and find peers.
	dhtInterval = 30 * time.Second
)

// dialer connects to peers learned from heartbeats, mDNS and the DHT, at most
// maxDials at once and each peer at most once per redialAfter.
func (m *Mesh) dialer(ctx context.Context, g *errgroup.Group, reqs <-chan peer.AddrInfo) error {
	sem := make(chan struct{}, maxDials)
	last := make(map[peer.ID]time.Time)
	for {
		var ai peer.AddrInfo
		select {
		case <-ctx.Done():
			return nil
		case ai = <-reqs:
		}
		now := time.Now()
		if ai.ID == m.self || now.Sub(last[ai.ID]) < redialAfter ||
			m.host.Network().Connectedness(ai.ID) == network.Connected {
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // busy; the peer is offered again by its next heartbeat
		}
		last[ai.ID] = now
		for id, t := range last { // keep the map bounded
			if now.Sub(t) > time.Minute {
				delete(last, id)
			}
		}
		g.Go(func() error {
			defer func() { <-sem }()
			m.clearDialBackoff(ai.ID)
			dctx, cancel := context.WithTimeout(ctx, dialTimeout)
			defer cancel()
			if err := m.host.Connect(dctx, ai); err != nil && ctx.Err() == nil {
				m.logger.Debug("dial failed", "peer", ai.ID, "err", err)
			}
			return nil
		})
	}
}

// startDiscovery starts the join dialers, mDNS and the DHT in g.
func (m *Mesh) startDiscovery(ctx context.Context, g *errgroup.Group, dials chan<- peer.AddrInfo) {
	for _, s := range m.cfg.Join {
		ai, err := parseJoin(s) // validated by Config.Validate
		if err != nil || ai.ID == m.self {
			continue
		}
		g.Go(func() error { return m.join(ctx, s, *ai) })
	}
	if m.cfg.MDNS {
		g.Go(func() error { return m.runMDNS(ctx, dials) })
	}
	if m.cfg.DHT {
		g.Go(func() error { return m.runDHT(ctx, dials) })
	}
}

// join keeps a connection to one join address: it dials with jittered
// exponential backoff (cenkalti/backoff) until connected, then checks again
// every joinBackoffMax. An address that does not answer is a warning, at
// the first failure and every joinWarnEvery after, naming the address: a
// node whose --join is wrong must not sit alone in silence. One that
// answers but fails the handshake (a mesh with another secret, or not a
// ringmesh node) says so, every joinForeignWarnEvery.
//
// A plain address (no /p2p/ID) first has its peer ID learned by handshake
// (learnPeerID), retried the same way; from then on it is dialled like a
// full one, and learned again after a failed dial.
func (m *Mesh) join(ctx context.Context, addr string, ai peer.AddrInfo) error {
	plain := ai.ID == ""
	if !plain {
		m.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = joinBackoffMin, joinBackoffMax, 0
	t := time.NewTimer(0)
	defer t.Stop()
	var failingSince, warned time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if ai.ID != "" && m.host.Network().Connectedness(ai.ID) == network.Connected {
			bo.Reset()
			t.Reset(joinBackoffMax)
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		var err error
		if plain && ai.ID == "" {
			var id peer.ID
			if id, err = m.learnPeerID(dctx, ai.Addrs[0]); err == nil {
				if id == m.self {
					cancel()
					m.logger.Info("join address is this node alone; ignoring it", "addr", ai.Addrs[0])
					return nil
				}
				ai.ID = id
				m.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
				m.logger.Info("join address answers as", "addr", ai.Addrs[0], "peer", id)
			}
		}
		if err == nil {
			// Paced by our backoff, not libp2p's (5s and up after a failure).
			m.clearDialBackoff(ai.ID)
			if err = m.host.Connect(dctx, ai); err != nil && plain {
				// The name may now reach another member (a restarted pod
				// at a new IP, another pod behind a Service): learn again.
				ai.ID = ""
			}
		}
		cancel()
		if err == nil {
			m.logger.Info("joined", "peer", ai.ID)
			bo.Reset()
			failingSince, warned = time.Time{}, time.Time{}
			t.Reset(joinBackoffMax)
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		next := bo.NextBackOff()
		now := time.Now()
		if failingSince.IsZero() {
			failingSince = now
		}
		foreign := foreignMesh(err)
		every := joinWarnEvery
		if foreign {
			every = joinForeignWarnEvery
		}
		switch {
		case !warned.IsZero() && now.Sub(warned) < every:
			m.logger.Debug("join dial failed", "peer", ai.ID, "err", err, "retry", next)
		case foreign:
			warned = now
			m.logger.Warn(m.foreignMessage(addr), "failing_for", now.Sub(failingSince).Round(time.Second),
				"retry_in", next.Round(time.Millisecond), "err", err)
		default:
			warned = now
			m.logger.Warn("join address does not answer; retrying", "addrs", ai.Addrs, "peer", ai.ID,
				"failing_for", now.Sub(failingSince).Round(time.Second), "retry_in", next.Round(time.Millisecond), "err", err)
		}
		t.Reset(next)
	}
}

// mdnsNotifee hands mDNS finds to the dialer without blocking.
type mdnsNotifee struct{ dials chan<- peer.AddrInfo }

func (n mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	select {
	case n.dials <- ai:
	default:
	}
}

// runMDNS advertises and browses the service "ringmesh-<mesh>" until ctx is
// done.
func (m *Mesh) runMDNS(ctx context.Context, dials chan<- peer.AddrInfo) error {
	svc := mdns.NewMdnsService(m.host, "ringmesh-"+m.cfg.Mesh, mdnsNotifee{dials: dials})
	if err := svc.Start(); err != nil {
		m.logger.Warn("mdns disabled", "err", err)
		return nil
	}
	<-ctx.Done()
	return svc.Close()
}

// runDHT runs a kad-dht server under /ringmesh, bootstrapped only from the
// join addresses and connected members, and periodically advertises and
// looks up the namespace "ringmesh/<mesh>".
func (m *Mesh) runDHT(ctx context.Context, dials chan<- peer.AddrInfo) error {
	d, err := dht.New(m.host,
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix("/ringmesh"),
		dht.BootstrapPeersFunc(m.bootstrapPeers),
	)
	if err != nil {
		m.logger.Warn("dht disabled", "err", err)
		return nil
	}
	defer d.Close()
	disc := drouting.NewRoutingDiscovery(d)
	ns := "ringmesh/" + m.cfg.Mesh
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		t.Reset(dhtInterval)
		if len(m.host.Network().Peers()) == 0 {
			continue
		}
		if err := d.Bootstrap(ctx); err != nil {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, dhtInterval)
		if _, err := disc.Advertise(actx, ns); err != nil {
			m.logger.Debug("dht advertise failed", "err", err)
		}
		found, err := disc.FindPeers(actx, ns)
		if err == nil {
			for ai := range found {
				select {
				case dials <- ai:
				default:
				}
			}
		}
		cancel()
	}
}

// bootstrapPeers lists the join addresses and connected peers for the DHT.
func (m *Mesh) bootstrapPeers() []peer.AddrInfo {
	var out []peer.AddrInfo
	for _, s := range m.cfg.Join {
		if ai, err := parseJoin(s); err == nil && ai.ID != "" { // plain ones are joined by m.join
			out = append(out, *ai)
		}
	}
	for _, p := range m.host.Network().Peers() {
		out = append(out, m.host.Peerstore().PeerInfo(p))
	}
	return out
}

// clearDialBackoff: the mesh paces its dials and probes with its own
// timers (see p2pconf.ClearDialBackoff).
func (m *Mesh) clearDialBackoff(p peer.ID) { p2pconf.ClearDialBackoff(m.host.Network(), p) }
