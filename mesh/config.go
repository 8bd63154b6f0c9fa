package mesh

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/ringmesh/ringmesh/internal/nvml"
)

// Hard limits of the wire format (see doc.go). Config values may be lower,
// never higher.
const (
	maxMeshNameLen = 64
	maxPayloadCap  = 64 << 10 // hard cap of Config.MaxPayload
	maxMessageCap  = 1 << 20  // hard cap of Config.MaxMessageSize (gossipsub's own RPC cap)
)

var meshNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]*$`)

// Config configures a Mesh. It is plain data; start from DefaultConfig or
// LocalConfig and call Validate (Open does) before use.
type Config struct {
	// Mesh names the mesh. Nodes with different names never exchange
	// gossip: it is part of every topic name, of the mDNS service name and
	// of the DHT namespace, and it is checked in every message.
	// 1-64 characters of [a-zA-Z0-9._-]. Default "default".
	Mesh string

	// DataDir holds the node identity (identity.key, Ed25519, mode 0600) and
	// the incarnation counter (incarnation). Required; created if missing.
	// Reusing the directory keeps the peer ID across restarts.
	DataDir string

	// Listen are the libp2p listen multiaddrs. Default
	// /ip4/0.0.0.0/tcp/4001 and /ip4/0.0.0.0/udp/4001/quic-v1. With a
	// PSKFile only TCP addresses are used (libp2p private networks do not
	// work over QUIC); the others are dropped with a warning.
	Listen []string

	// Join are the multiaddrs of members to join through: full ones ending in
	// /p2p/<id>, or plain TCP ones (/ip4/A/tcp/P, /dns4/H/tcp/P) whose peer ID
	// is learned by handshake.
	// Dialled with exponential backoff until connected; one live member is
	// enough, the rest are learned from heartbeats. Empty for the first node.
	Join []string

	// MDNS enables mDNS discovery on the local link (service name
	// "ringmesh-<mesh>"). Default true. Zero config on a LAN, but it
	// multicasts on every interface.
	MDNS bool

	// DHT enables kad-dht discovery (server mode, protocol prefix /ringmesh,
	// namespace "ringmesh/<mesh>"), bootstrapped only from Join addresses and
	// mesh members, never from public peers. Default true. Helps meshes
	// larger than a LAN at the cost of some background traffic.
	DHT bool

	// UserAgent is the libp2p agent string peers see (identify). Default
	// "ringmesh".
	UserAgent string

	// PSKFile is a libp2p private network key in the /key/swarm/psk/1.0.0/
	// format. Peers without the same key cannot complete a connection.
	// Empty: no private network.
	PSKFile string

	// AllowFile lists the peer IDs allowed to connect, one per line, '#'
	// starts a comment. Enforced by a connection gater after the security
	// handshake, and again on every gossip message author. Empty: any peer.
	AllowFile string

	// HeartbeatInterval is how often a node publishes its heartbeat.
	// Default 1s. Lower detects failures sooner at the cost of gossip
	// traffic (O(members) messages per interval per node).
	HeartbeatInterval time.Duration

	// SuspectTimeout is how long a member may go without a heartbeat before
	// it becomes suspect and is probed. Default 3s (3 heartbeats). Must be
	// at least 2 HeartbeatIntervals. A closed connection or a Suspect call
	// probes a member at once, without waiting for this.
	SuspectTimeout time.Duration

	// ProbeTimeout bounds the direct libp2p ping of a member being
	// checked, and each helper's ping when up to 3 other members are asked
	// to probe it after the direct ping failed (that indirect phase takes
	// at most 2 ProbeTimeouts). Only a member that none of them reaches
	// becomes suspect. Default 1.5s.
	ProbeTimeout time.Duration

	// DeadTimeout is the longest a member stays suspect without a
	// heartbeat (even when probes succeed) before it is declared dead.
	// Every other member that independently could not reach it shortens
	// this, down to max(HeartbeatInterval, DeadTimeout/4) (at most
	// DeadTimeout) once 3 have (fewer in a smaller mesh). Default 4s; must
	// be > ProbeTimeout.
	DeadTimeout time.Duration

	// ForgetAfter is how long dead and left members stay in the view (so
	// status shows them) before they are forgotten. Default 1m.
	ForgetAfter time.Duration

	// MaxPayload caps SetPayload, in bytes. Default 4096, at most 65536.
	// Heartbeats whose payload is larger are rejected.
	MaxPayload int

	// MaxMessageSize caps one message on the mesh topics, in bytes, checked
	// in the topic validators. Default 65536, at most 1 MiB (gossipsub's
	// RPC limit, which applies to all topics).
	MaxMessageSize int

	// PeerMemory bounds the memory, in bytes, the libp2p resource manager
	// lets one peer hold (stream windows, buffers). Default 1 GiB: room for
	// several bulk streams with 16 MiB yamux windows, yet one peer cannot
	// exhaust the host.
	PeerMemory int64

	// Registerer, when set, gets libp2p's own Prometheus metrics (swarm,
	// identify, event bus). Nil disables them.
	Registerer prometheus.Registerer

	// NVML is the NVML library used to detect GPUs. Nil means the real
	// library (nvml.New()); tests pass a mock.
	NVML nvml.Interface

	// connGater, for tests only, also gates every connection (tests cut
	// links with it). Nil in production.
	connGater connmgr.ConnectionGater
}

// DefaultConfig returns the configuration for a production node. DataDir
// must still be set.
func DefaultConfig() Config {
	return Config{
		Mesh:              "default",
		UserAgent:         "ringmesh",
		Listen:            []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"},
		MDNS:              true,
		DHT:               true,
		HeartbeatInterval: time.Second,
		SuspectTimeout:    3 * time.Second,
		ProbeTimeout:      1500 * time.Millisecond,
		DeadTimeout:       4 * time.Second,
		ForgetAfter:       time.Minute,
		MaxPayload:        4 << 10,
		MaxMessageSize:    64 << 10,
		PeerMemory:        1 << 30,
	}
}

// LocalConfig returns a configuration for tests on one machine: loopback
// TCP on a random port, no mDNS, no DHT, failure detection in about 1s.
func LocalConfig() Config {
	c := DefaultConfig()
	c.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	c.MDNS = false
	c.DHT = false
	c.FastDetect()
	c.ForgetAfter = 30 * time.Second
	return c
}

// FastDetect sets failure detection to about 1s (heartbeat 200ms) instead
// of the 5s defaults (`ringmesh node --fast-detect`).
func (c *Config) FastDetect() {
	c.HeartbeatInterval = 200 * time.Millisecond
	c.SuspectTimeout = 600 * time.Millisecond
	c.ProbeTimeout = 400 * time.Millisecond
	c.DeadTimeout = time.Second
}

// Validate checks every field and the relations between them.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if len(c.Mesh) == 0 || len(c.Mesh) > maxMeshNameLen || !meshNameRE.MatchString(c.Mesh) {
		bad("mesh name %q: want 1-%d characters of [a-zA-Z0-9._-]", c.Mesh, maxMeshNameLen)
	}
	if c.DataDir == "" {
		bad("data dir is required")
	}
	if len(c.Listen) == 0 {
		bad("no listen address")
	}
	for _, s := range c.Listen {
		if _, err := multiaddr.NewMultiaddr(s); err != nil {
			bad("listen address %q: %w", s, err)
		}
	}
	for _, s := range c.Join {
		if _, err := parseJoin(s); err != nil {
			bad("join address %q: %w", s, err)
		}
	}
	if c.HeartbeatInterval <= 0 {
		bad("heartbeat interval %v: must be positive", c.HeartbeatInterval)
	}
	if c.SuspectTimeout < 2*c.HeartbeatInterval {
		bad("suspect timeout %v: must be at least 2 heartbeat intervals (%v)", c.SuspectTimeout, 2*c.HeartbeatInterval)
	}
	if c.ProbeTimeout <= 0 {
		bad("probe timeout %v: must be positive", c.ProbeTimeout)
	}
	if c.DeadTimeout <= c.ProbeTimeout {
		bad("dead timeout %v: must exceed probe timeout %v", c.DeadTimeout, c.ProbeTimeout)
	}
	if c.ForgetAfter <= 0 {
		bad("forget after %v: must be positive", c.ForgetAfter)
	}
	if c.MaxPayload < 0 || c.MaxPayload > maxPayloadCap {
		bad("max payload %d: want 0-%d", c.MaxPayload, maxPayloadCap)
	}
	if c.MaxMessageSize < 1024 || c.MaxMessageSize > maxMessageCap {
		bad("max message size %d: want 1024-%d", c.MaxMessageSize, maxMessageCap)
	}
	if c.MaxMessageSize < c.MaxPayload+maxHeartbeatOverhead {
		bad("max message size %d: must hold a heartbeat with a full payload (%d)", c.MaxMessageSize, c.MaxPayload+maxHeartbeatOverhead)
	}
	if c.PeerMemory < 64<<20 {
		bad("peer memory %d: want at least 64 MiB", c.PeerMemory)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return nil
}
