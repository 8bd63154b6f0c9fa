package mesh

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p"
	gating "github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	yamux "github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/libp2p/go-libp2p/x/rate"
	"github.com/multiformats/go-multiaddr"

	"github.com/ringmesh/ringmesh/internal/p2pconf"
)

// buildHost makes the libp2p host: identity, listen addresses, TLS then
// Noise, yamux, bounded resource manager, optional private network and
// allow-list gater.
func buildHost(cfg Config, key crypto.PrivKey, psk pnet.PSK, allow map[peer.ID]bool, logger *slog.Logger) (host.Host, error) {
	listen, err := listenAddrs(cfg.Listen, psk != nil, logger)
	if err != nil {
		return nil, err
	}
	rm, err := p2pconf.ResourceManager(cfg.PeerMemory, rcmgr.WithConnRateLimiters(connRateLimiter()))
	if err != nil {
		return nil, err
	}
	// Members keep a connection to every other member (a few hundred at
	// most); libp2p's default manager would start trimming at 192.
	cm, err := connmgr.NewConnManager(900, 1000, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("connection manager: %w", err)
	}
	opts := append(p2pconf.Security(),
		libp2p.Identity(key),
		libp2p.ListenAddrs(listen...),
		libp2p.Muxer(yamux.ID, p2pconf.Muxer()),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		// No SO_REUSEPORT: a second node on a busy port must fail to
		// listen, not share the port with the first (and half its
		// connections).
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		libp2p.DisableRelay(),
		libp2p.Ping(true),
	)
	if cfg.Registerer != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.Registerer))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	if cfg.UserAgent != "" {
		opts = append(opts, libp2p.UserAgent(cfg.UserAgent))
	}
	if psk != nil {
		opts = append(opts, libp2p.PrivateNetwork(psk))
	} else {
		opts = append(opts, libp2p.Transport(quic.NewTransport))
	}
	var gaters bothGaters
	if allow != nil {
		gaters = append(gaters, &allowGater{allow: allow})
	}
	if cfg.connGater != nil {
		gaters = append(gaters, cfg.connGater)
	}
	switch len(gaters) {
	case 0:
	case 1:
		opts = append(opts, libp2p.ConnectionGater(gaters[0]))
	default:
		opts = append(opts, libp2p.ConnectionGater(gaters))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		cm.Close()
		rm.Close()
		if strings.Contains(err.Error(), "address already in use") {
			return nil, fmt.Errorf("cannot listen on %v: another process (another node?) holds the port; stop it or choose another --listen: %w", cfg.Listen, err)
		}
		return nil, fmt.Errorf("libp2p host: %w", err)
	}
	return h, nil
}

// listenAddrs parses the listen addresses; with a private network only TCP
// ones are kept (pnet does not work over QUIC).
func listenAddrs(ss []string, private bool, logger *slog.Logger) ([]multiaddr.Multiaddr, error) {
	var out []multiaddr.Multiaddr
	for _, s := range ss {
		a, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("listen address %q: %w", s, err)
		}
		if private && !isTCP(a) {
			logger.Warn("listen address dropped: private network needs tcp", "addr", s)
			continue
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no usable listen address", ErrInvalidConfig)
	}
	return out, nil
}

func isTCP(a multiaddr.Multiaddr) bool {
	tcp, ws := false, false
	for _, c := range a {
		switch c.Protocol().Code {
		case multiaddr.P_TCP:
			tcp = true
		case multiaddr.P_WS, multiaddr.P_WSS:
			ws = true
		}
	}
	return tcp && !ws
}

// readPSK reads a /key/swarm/psk/1.0.0/ private network key.
func readPSK(path string) (pnet.PSK, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read psk: %w", err)
	}
	psk, err := pnet.DecodeV1PSK(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("decode psk %s: %w", path, err)
	}
	return psk, nil
}

// readAllow reads an allow file: one peer ID per line, '#' comments.
func readAllow(path string) (map[peer.ID]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read allow file: %w", err)
	}
	defer f.Close()
	allow := make(map[peer.ID]bool)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		id, err := peer.Decode(line)
		if err != nil {
			return nil, fmt.Errorf("allow file %s line %d: %w", path, n, err)
		}
		allow[id] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read allow file: %w", err)
	}
	return allow, nil
}

// CheckJoinAddr says whether s is a join address parseJoin accepts.
func CheckJoinAddr(s string) error {
	_, err := parseJoin(s)
	return err
}

// parseJoin parses a join multiaddr: either a full member address ending
// in /p2p/<id>, or a plain TCP address (/ip4/A/tcp/P, /dns4/H/tcp/P) whose
// peer ID the join loop learns by handshake (see learnPeerID); then the
// AddrInfo's ID is empty.
func parseJoin(s string) (*peer.AddrInfo, error) {
	a, err := multiaddr.NewMultiaddr(s)
	if err != nil {
		return nil, err
	}
	if _, err := a.ValueForProtocol(multiaddr.P_P2P); err != nil {
		if !plainTCP(a) {
			return nil, fmt.Errorf("want /ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT, or any address ending in /p2p/<peer id>")
		}
		return &peer.AddrInfo{Addrs: []multiaddr.Multiaddr{a}}, nil
	}
	ai, err := peer.AddrInfoFromP2pAddr(a)
	if err != nil {
		return nil, fmt.Errorf("want /.../p2p/<peer id>: %w", err)
	}
	return ai, nil
}

// allowGater admits only listed peers. The check that counts is
// InterceptSecured: after the handshake the remote peer ID is authenticated.
type allowGater struct {
	allow map[peer.ID]bool // read-only after construction
}

func (g *allowGater) InterceptPeerDial(p peer.ID) bool { return g.allow[p] }

func (g *allowGater) InterceptAddrDial(peer.ID, multiaddr.Multiaddr) bool { return true }

func (g *allowGater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

func (g *allowGater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allow[p]
}

func (g *allowGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}

// bothGaters admits what every one of its gaters admits.
type bothGaters []gating.ConnectionGater

func (gs bothGaters) InterceptPeerDial(p peer.ID) bool {
	for _, g := range gs {
		if !g.InterceptPeerDial(p) {
			return false
		}
	}
	return true
}

func (gs bothGaters) InterceptAddrDial(p peer.ID, a multiaddr.Multiaddr) bool {
	for _, g := range gs {
		if !g.InterceptAddrDial(p, a) {
			return false
		}
	}
	return true
}

func (gs bothGaters) InterceptAccept(c network.ConnMultiaddrs) bool {
	for _, g := range gs {
		if !g.InterceptAccept(c) {
			return false
		}
	}
	return true
}

func (gs bothGaters) InterceptSecured(d network.Direction, p peer.ID, c network.ConnMultiaddrs) bool {
	for _, g := range gs {
		if !g.InterceptSecured(d, p, c) {
			return false
		}
	}
	return true
}

func (gs bothGaters) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	for _, g := range gs {
		if ok, r := g.InterceptUpgraded(c); !ok {
			return false, r
		}
	}
	return true, 0
}

// connRateLimiter bounds new connections per peer IP, in both directions.
// libp2p's default (0.2 per second after a burst of 16, meant for public
// DHT servers) starves a cluster: the same few hosts reconnect after every
// partition and every restart, and once the burst is spent every dial to a
// member's IP fails with "rate limit exceeded" for minutes. Members are
// credentialed and few; this allows 10 per second per IP after a burst of
// 64, and does not limit loopback.
func connRateLimiter() *rate.Limiter {
	unlimited := rate.Limit{}
	return &rate.Limiter{
		NetworkPrefixLimits: []rate.PrefixLimit{
			{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Limit: unlimited},
			{Prefix: netip.MustParsePrefix("::1/128"), Limit: unlimited},
		},
		SubnetRateLimiter: rate.SubnetLimiter{
			IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: 32, Limit: rate.Limit{RPS: 10, Burst: 64}}},
			IPv6SubnetLimits: []rate.SubnetLimit{{PrefixLength: 64, Limit: rate.Limit{RPS: 10, Burst: 64}}},
			GracePeriod:      time.Minute,
		},
	}
}
