package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
)

// Topic kinds used by the mesh itself.
const (
	topicHeartbeat = "heartbeat"
	topicFailure   = "failure"
)

// Mesh is a node's membership in a mesh: a libp2p host, gossipsub, and the
// failure detector. Open builds it, Run runs it, Close releases it. The
// methods are safe for concurrent use.
type Mesh struct {
	cfg     Config
	logger  *slog.Logger
	metrics Metrics
	host    host.Host
	self    peer.ID
	allow   map[peer.ID]bool // nil: any peer; read-only
	key     crypto.PrivKey   // the host's identity, for learnPeerID
	psk     pnet.PSK         // nil: open mesh
	ps      *pubsub.PubSub
	psStop  context.CancelFunc
	hbTopic *pubsub.Topic
	fTopic  *pubsub.Topic

	incarnation atomic.Uint64
	running     atomic.Bool
	incMu       sync.Mutex // serialises incarnation bumps and their disk writes

	mu       sync.Mutex // guards the fields below (leaf data, never held across I/O)
	payload  []byte
	caps     Capabilities
	others   []Member // latest snapshot of the table, sorted, self excluded
	watchers map[*watcher]struct{}
	closed   bool

	events chan func(*loopState) // fed to the loop goroutine that owns the table
}

// Open loads or creates the node identity in cfg.DataDir, bumps the
// incarnation, detects capabilities, builds the libp2p host (it listens at
// once) and gossipsub, and joins the mesh topics with their validators. It
// starts no membership goroutine: call Run. A nil logger discards, a nil
// metrics is NopMetrics.
func Open(ctx context.Context, cfg Config, logger *slog.Logger, metrics Metrics) (*Mesh, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if metrics == nil {
		metrics = NopMetrics{}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	key, err := loadOrCreateIdentity(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	inc, err := bumpIncarnation(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	var allow map[peer.ID]bool
	if cfg.AllowFile != "" {
		if allow, err = readAllow(cfg.AllowFile); err != nil {
			return nil, err
		}
	}
	var psk pnet.PSK
	if cfg.PSKFile != "" {
		if psk, err = readPSK(cfg.PSKFile); err != nil {
			return nil, err
		}
	}
	logger = logger.With("component", "mesh")
	h, err := buildHost(cfg, key, psk, allow, logger)
	if err != nil {
		return nil, err
	}
	m := &Mesh{
		cfg: cfg, logger: logger, metrics: metrics, host: h, self: h.ID(), allow: allow,
		key: key, psk: psk,
		caps:     DetectCapabilities(cfg.NVML),
		watchers: make(map[*watcher]struct{}),
		events:   make(chan func(*loopState), 256),
	}
	m.incarnation.Store(inc)
	if err := m.openPubSub(ctx); err != nil {
		m.Close()
		return nil, err
	}
	logger.Info("mesh open", "peer", m.self, "incarnation", inc, "addrs", h.Addrs(), "gpus", len(m.caps.GPUs))
	return m, nil
}

func (m *Mesh) openPubSub(ctx context.Context) error {
	// pubsub's goroutines live until Close, not until ctx: Open's ctx only
	// bounds Open.
	psCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	m.psStop = stop
	ps, err := pubsub.NewGossipSub(psCtx, m.host,
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		pubsub.WithMaxMessageSize(maxMessageCap),
		pubsub.WithPeerScore(m.scoreParams()),
	)
	if err != nil {
		return fmt.Errorf("gossipsub: %w", err)
	}
	m.ps = ps
	if err := ps.RegisterTopicValidator(m.TopicName(topicHeartbeat), m.validateHeartbeat); err != nil {
		return fmt.Errorf("heartbeat validator: %w", err)
	}
	if err := ps.RegisterTopicValidator(m.TopicName(topicFailure), m.validateFailure); err != nil {
		return fmt.Errorf("failure validator: %w", err)
	}
	if m.hbTopic, err = ps.Join(m.TopicName(topicHeartbeat)); err != nil {
		return fmt.Errorf("join heartbeat topic: %w", err)
	}
	if m.fTopic, err = ps.Join(m.TopicName(topicFailure)); err != nil {
		return fmt.Errorf("join failure topic: %w", err)
	}
	return nil
}

// scoreParams makes gossipsub score peers by the invalid messages they relay
// on the mesh topics, and nothing else: no IP colocation penalty (hosts may
// share an address in tests and behind NAT), no delivery quotas (heartbeats
// are sparse). Penalty = -1 x (invalid messages)^2, decaying by 10% a
// second: a peer that relays ~10 invalid messages in a burst stops getting
// gossip, ~30 and it is graylisted. Other topics (joined by other packages)
// score 0.
func (m *Mesh) scoreParams() (*pubsub.PeerScoreParams, *pubsub.PeerScoreThresholds) {
	topic := func() *pubsub.TopicScoreParams {
		return &pubsub.TopicScoreParams{
			SkipAtomicValidation:           true,
			TopicWeight:                    1,
			TimeInMeshQuantum:              time.Second, // divisor even at weight 0
			InvalidMessageDeliveriesWeight: -1,
			InvalidMessageDeliveriesDecay:  0.9,
		}
	}
	params := &pubsub.PeerScoreParams{
		SkipAtomicValidation: true,
		Topics: map[string]*pubsub.TopicScoreParams{
			m.TopicName(topicHeartbeat): topic(),
			m.TopicName(topicFailure):   topic(),
		},
		AppSpecificScore: func(peer.ID) float64 { return 0 },
		DecayInterval:    time.Second,
		DecayToZero:      0.01,
	}
	thresholds := &pubsub.PeerScoreThresholds{
		SkipAtomicValidation: true,
		GossipThreshold:      -100,
		PublishThreshold:     -500,
		GraylistThreshold:    -1000,
	}
	return params, thresholds
}

// Close closes everything Open made: topics, gossipsub, the host. It does not
// announce a leave (Run does when its ctx ends), so closing a mesh whose Run
// is still going looks like a crash to the others (that Run still returns
// only when its ctx ends). Idempotent.
func (m *Mesh) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.closeWatchers()
	for _, t := range []*pubsub.Topic{m.hbTopic, m.fTopic} {
		if t != nil {
			// Fails while a Run still holds subscriptions (a crash-like
			// Close); stopping pubsub below releases them anyway.
			_ = t.Close()
		}
	}
	if m.psStop != nil {
		m.psStop()
	}
	if err := m.host.Close(); err != nil {
		return fmt.Errorf("close host: %w", err)
	}
	return nil
}

// Host returns the libp2p host, for stream protocols.
func (m *Mesh) Host() host.Host { return m.host }

// Self returns the local peer ID.
func (m *Mesh) Self() peer.ID { return m.self }

// PubSub returns the gossipsub router, so other packages can join their own
// topics (use TopicName).
func (m *Mesh) PubSub() *pubsub.PubSub { return m.ps }

// Allowed reports whether p may take part: there is no allow list, or p is
// on it. Topics that other packages join check their messages' authors
// with it (a listed peer can forward an unlisted author's message).
func (m *Mesh) Allowed(p peer.ID) bool { return m.allow == nil || p == m.self || m.allow[p] }

// TopicName returns the mesh-scoped topic name for kind:
// "ringmesh/<mesh>/<kind>/1".
func (m *Mesh) TopicName(kind string) string {
	return "ringmesh/" + m.cfg.Mesh + "/" + kind + "/1"
}

// Incarnation returns the local node's current incarnation.
func (m *Mesh) Incarnation() uint64 { return m.incarnation.Load() }

// SetPayload sets the free-form payload carried by the next heartbeats. It
// copies p; at most Config.MaxPayload bytes.
func (m *Mesh) SetPayload(p []byte) error {
	if len(p) > m.cfg.MaxPayload {
		return fmt.Errorf("%w: %d bytes, max %d", ErrPayloadTooLarge, len(p), m.cfg.MaxPayload)
	}
	m.mu.Lock()
	m.payload = slices.Clone(p)
	m.mu.Unlock()
	return nil
}

// Suspect asks failure detection to check p at once; other packages call it
// on stream errors. p is probed directly and, if that fails, through up to 3
// other members; it becomes suspect only if none of them reaches it either,
// so a broken link between this node and p does not make p suspect. reason
// is logged. It never blocks; it is a no-op when Run is not running or p is
// not an alive or suspect member.
func (m *Mesh) Suspect(p peer.ID, reason error) {
	m.logger.Debug("suspect requested", "peer", p, "err", reason)
	m.post(func(s *loopState) { s.apply(s.table.check(p, time.Now())) })
}

// View returns the current membership, self included as alive.
func (m *Mesh) View() View {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.viewLocked(time.Now())
}

func (m *Mesh) viewLocked(now time.Time) View {
	members := make([]Member, 0, len(m.others)+1)
	members = append(members, m.others...)
	members = append(members, Member{
		ID: m.self, State: Alive, Incarnation: m.incarnation.Load(),
		Addrs: m.host.Addrs(), Caps: m.caps, Payload: m.payload, LastSeen: now,
	})
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return View{Self: m.self, Members: members}
}

// post hands f to the loop without blocking; it is dropped when the loop is
// not keeping up (the timers then catch what f would have sped up).
func (m *Mesh) post(f func(*loopState)) {
	select {
	case m.events <- f:
	default:
	}
}
