package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/internal/streamset"
	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// LinkProbeProtocol measures the rate of the link between two members: the
// prober writes a header (magic "RMLP", u32 n) and n bytes, the receiver
// times them from its first read to its last and answers with u64 bytes
// counted after the first read and u64 nanoseconds. The rate is the
// prober's egress sample and the receiver's ingress sample; each node
// advertises the fastest of its recent samples (a link estimate says what
// the host's own link can do, and a slow peer only slows the probe it
// takes part in).
const LinkProbeProtocol = "/ringmesh/linkprobe/1"

const (
	// LinkProbeBytes is what one probe sends: long enough that a
	// 100 Mbit/s link takes most of a second and socket buffers and token
	// bucket bursts do not show.
	LinkProbeBytes = 8 << 20
	maxProbeBytes  = 64 << 20
	probeTimeout   = 30 * time.Second
	// probeEvery is how often each peer is probed again; probeRetry the
	// pause after a failed probe (the peer was busy with another).
	probeEvery = 5 * time.Minute
	probeRetry = 2 * time.Second
	// probeSamples: the samples kept per peer and direction.
	probeSamples = 3
	// probeMinGap: a peer may probe this node at most this often.
	probeMinGap = 10 * time.Second
)

var probeMagic = [4]byte{'R', 'M', 'L', 'P'}

// linkProber owns the probes of one node: it probes each live member once
// it appears and every probeEvery, one at a time, answers other members'
// probes one at a time, and hands the estimate to the round machine.
type linkProber struct {
	n   *Node
	log *slog.Logger
	set func(rounds.Link) // runs on the node's loop

	mu      sync.Mutex
	egress  map[peer.ID][]float64 // bytes/s, newest last
	ingress map[peer.ID][]float64
	last    map[peer.ID]time.Time // last accepted probe from each peer
	busy    bool                  // answering a probe now
	streams streamset.Set
}

func newLinkProber(n *Node, set func(rounds.Link)) *linkProber {
	return &linkProber{n: n, log: n.log.With("component", "linkprobe"), set: set,
		egress: map[peer.ID][]float64{}, ingress: map[peer.ID][]float64{}, last: map[peer.ID]time.Time{}}
}

// run probes members until ctx ends.
func (l *linkProber) run(ctx context.Context) error {
	views := l.n.mesh.Watch(ctx)
	due := map[peer.ID]time.Time{} // next probe of each member
	var wake <-chan time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	var live []peer.ID
	for {
		select {
		case <-ctx.Done():
			return nil
		case v, ok := <-views:
			if !ok {
				return nil
			}
			live = live[:0]
			for _, m := range v.Members {
				if m.ID != v.Self && m.State == mesh.Alive {
					live = append(live, m.ID)
					if _, ok := due[m.ID]; !ok {
						// Spread first probes so that members that meet at
						// once do not all probe the same peer.
						due[m.ID] = time.Now().Add(rand.N(time.Second))
					}
				}
			}
		case <-wake:
		}
		now := time.Now()
		next := now.Add(probeEvery)
		for _, id := range live {
			if t := due[id]; !t.After(now) {
				if err := l.probe(ctx, id); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					l.log.Debug("link probe", "peer", id.ShortString(), "err", err)
					due[id] = time.Now().Add(probeRetry + rand.N(probeRetry))
				} else {
					due[id] = time.Now().Add(probeEvery)
				}
				now = time.Now()
			}
			if due[id].Before(next) {
				next = due[id]
			}
		}
		if timer != nil {
			timer.Stop()
		}
		timer = time.NewTimer(max(time.Until(next), 10*time.Millisecond))
		wake = timer.C
	}
}

// probe measures the link to id once.
func (l *linkProber) probe(ctx context.Context, id peer.ID) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	s, err := l.n.host.NewStream(ctx, id, LinkProbeProtocol)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	_ = s.SetDeadline(time.Now().Add(probeTimeout))
	start := time.Now()
	hdr := binary.BigEndian.AppendUint32(probeMagic[:], LinkProbeBytes)
	if _, err := s.Write(hdr); err != nil {
		s.Reset()
		return err
	}
	if err := writeZeros(s, LinkProbeBytes); err != nil {
		s.Reset()
		return err
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return err
	}
	var ans [16]byte
	if _, err := io.ReadFull(s, ans[:]); err != nil {
		s.Reset()
		return fmt.Errorf("probe answer: %w", err)
	}
	s.Close()
	elapsed := time.Since(start)
	bytes, nanos := binary.BigEndian.Uint64(ans[:8]), binary.BigEndian.Uint64(ans[8:])
	if bytes == 0 || nanos == 0 || bytes > LinkProbeBytes {
		return fmt.Errorf("probe answer: %d bytes in %d ns", bytes, nanos)
	}
	rate := float64(bytes) / (float64(nanos) / 1e9)
	// The receiver's timing is the precise one, but not to be taken on
	// its word: no link carries the probe much faster than the prober saw
	// it go.
	rate = min(rate, 2*LinkProbeBytes/elapsed.Seconds())
	l.add(l.egress, id, rate)
	l.log.Debug("link probe", "peer", id.ShortString(), "rate_Bps", int64(rate))
	return nil
}

func writeZeros(w io.Writer, n int) error {
	var zero [64 << 10]byte
	for n > 0 {
		k := min(n, len(zero))
		if _, err := w.Write(zero[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// handle answers one probe: at most one at a time, at most one per peer
// per probeMinGap, never more than maxProbeBytes read.
func (l *linkProber) handle(s network.Stream) {
	from := s.Conn().RemotePeer()
	l.mu.Lock()
	if l.busy || time.Since(l.last[from]) < probeMinGap {
		l.mu.Unlock()
		s.Reset()
		return
	}
	l.busy = true
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.busy = false
		l.mu.Unlock()
	}()
	if !l.streams.Add(s) {
		return
	}
	defer l.streams.Done(s)
	if err := l.answer(s, from); err != nil {
		l.log.Debug("link probe from peer", "peer", from.ShortString(), "err", err)
		s.Reset()
		return
	}
	s.Close()
}

func (l *linkProber) answer(s network.Stream, from peer.ID) error {
	_ = s.SetDeadline(time.Now().Add(probeTimeout))
	var hdr [8]byte
	if _, err := io.ReadFull(s, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[4:])
	if [4]byte(hdr[:4]) != probeMagic || n == 0 || n > maxProbeBytes {
		return fmt.Errorf("bad probe header %x", hdr)
	}
	l.mu.Lock()
	l.last[from] = time.Now()
	l.mu.Unlock()
	buf := make([]byte, 64<<10)
	var first time.Time
	var got, after uint64
	for got < uint64(n) {
		k, err := s.Read(buf[:min(uint64(len(buf)), uint64(n)-got)])
		if k > 0 {
			if first.IsZero() {
				first = time.Now()
			} else {
				after += uint64(k)
			}
			got += uint64(k)
		}
		if err != nil {
			return fmt.Errorf("probe after %d of %d bytes: %w", got, n, err)
		}
	}
	d := time.Since(first)
	if after == 0 || d <= 0 {
		return errors.New("probe too short to time")
	}
	var ans [16]byte
	binary.BigEndian.PutUint64(ans[:8], after)
	binary.BigEndian.PutUint64(ans[8:], uint64(d.Nanoseconds()))
	if _, err := s.Write(ans[:]); err != nil {
		return err
	}
	l.add(l.ingress, from, float64(after)/d.Seconds())
	return nil
}

// add records a sample and hands the new estimate to the machine.
func (l *linkProber) add(m map[peer.ID][]float64, id peer.ID, rate float64) {
	l.mu.Lock()
	s := append(m[id], rate)
	if len(s) > probeSamples {
		s = s[len(s)-probeSamples:]
	}
	m[id] = s
	est := rounds.Link{Egress: quantizeRate(fastest(l.egress)), Ingress: quantizeRate(fastest(l.ingress))}
	l.mu.Unlock()
	l.set(est)
}

// probed returns how many peers this node has probed, and been probed
// by.
func (l *linkProber) probed() (out, in int) {
	if l == nil {
		return 0, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.egress), len(l.ingress)
}

func fastest(m map[peer.ID][]float64) float64 {
	var best float64
	for _, s := range m {
		if len(s) > 0 {
			best = max(best, slices.Max(s))
		}
	}
	return best
}

// quantizeRate rounds a rate down to a step of 2^(1/8) (about 9%), so that
// members with the same hardware advertise the same figure and plans do
// not change with measurement noise.
func quantizeRate(r float64) uint64 {
	if !(r >= 1) || math.IsInf(r, 0) {
		return 0
	}
	return uint64(math.Exp2(math.Floor(math.Log2(r)*8) / 8))
}

// close resets the probes being answered and waits for their handlers.
func (l *linkProber) close() { l.streams.Close() }
