package roundrun

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/internal/p2pconf"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// senders keeps one outbound round stream per peer, written by one
// goroutine each from a bounded queue. Delivery is best effort: a full
// queue or a broken stream drops messages, and the machine resends what
// matters.
type senders struct {
	ctx context.Context
	d   *Driver
	mu  sync.Mutex
	q   map[peer.ID]chan []byte
	wg  sync.WaitGroup
}

const sendQueue = 256

func newSenders(ctx context.Context, d *Driver) *senders {
	return &senders{ctx: ctx, d: d, q: map[peer.ID]chan []byte{}}
}

func (s *senders) send(m rounds.Message) {
	b, err := encodeMsg(m)
	if err != nil {
		s.d.log.Warn("encode round message", "type", m.Type, "err", err)
		return
	}
	s.mu.Lock()
	q, ok := s.q[m.To]
	if !ok {
		q = make(chan []byte, sendQueue)
		s.q[m.To] = q
		s.wg.Add(1)
		go s.run(m.To, q)
	}
	s.mu.Unlock()
	select {
	case q <- b:
	default:
	}
}

// run writes q's messages to p until the node stops.
func (s *senders) run(p peer.ID, q chan []byte) {
	defer s.wg.Done()
	var st network.Stream
	defer func() {
		if st != nil {
			st.Close()
		}
	}()
	timeout := s.d.cfg.RPCTimeout
	for {
		var b []byte
		select {
		case <-s.ctx.Done():
			return
		case b = <-q:
		}
		if st == nil {
			ctx, cancel := context.WithTimeout(s.ctx, timeout)
			var err error
			if s.d.host.Network().Connectedness(p) != network.Connected {
				// This loop paces its own dials (Resend).
				p2pconf.ClearDialBackoff(s.d.host.Network(), p)
			}
			st, err = s.d.host.NewStream(network.WithAllowLimitedConn(ctx, "round"), p, Protocol)
			cancel()
			if err != nil {
				// Unreachable: drop what is queued (the machine resends
				// what matters) and pause before the next dial.
				st = nil
				s.d.log.Debug("round stream", "peer", p, "err", err)
				for len(q) > 0 {
					<-q
				}
				select {
				case <-s.ctx.Done():
					return
				case <-time.After(s.d.cfg.Machine.Resend):
				}
				continue
			}
		}
		st.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := st.Write(b); err != nil {
			st.Reset()
			st = nil
		}
	}
}

func (s *senders) wait() { s.wg.Wait() }

// roundIdle bounds how long an inbound round stream stays open without a
// message.
const roundIdle = 2 * time.Minute

// HandleStream reads round messages off one inbound stream (Protocol) and
// hands them to the loop. A malformed message resets the stream and is
// counted; the node keeps running. Close resets the streams still open.
func (d *Driver) HandleStream(s network.Stream) {
	if !d.inbound.Add(s) {
		return
	}
	defer d.inbound.Done(s)
	from, self := s.Conn().RemotePeer(), d.cfg.Self
	for {
		s.SetReadDeadline(time.Now().Add(roundIdle))
		m, err := readMsg(s)
		if err != nil {
			if errors.Is(err, io.EOF) {
				s.Close()
				return
			}
			if errors.Is(err, rounds.ErrMalformed) {
				d.log.Warn("bad round message", "peer", from, "err", err)
				d.badMessage.Add(1)
			}
			s.Reset()
			return
		}
		m.From, m.To = from, self
		select {
		case d.in <- m:
		default:
			d.inDropped.Add(1)
		}
	}
}
