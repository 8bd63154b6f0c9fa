package node

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// handleRound serves one inbound round control stream: one request, one
// reply. A malformed request resets the stream; the node keeps running.
func (n *Node) handleRound(s network.Stream) {
	defer s.Close()
	s.SetDeadline(time.Now().Add(n.cfg.RPCTimeout))
	req, err := readMsg(s)
	if err != nil {
		n.log.Warn("bad round message", "peer", s.Conn().RemotePeer(), "err", err)
		n.metrics.badMessage()
		s.Reset()
		return
	}
	resp := n.serveRound(s.Conn().RemotePeer(), req)
	if err := writeMsg(s, resp); err != nil {
		s.Reset()
	}
}

func (n *Node) serveRound(from peer.ID, m *msg) *msg {
	e := n.eng
	e.mu.Lock()
	defer e.mu.Unlock()
	ack := &msg{Type: msgAck, Step: e.nextStep, Flags: flagApplied}
	a := e.cur
	match := a != nil && a.step == m.Step && a.key == m.Ring
	switch m.Type {
	case msgReady:
		if match {
			a.readies[from] = true
			e.notifyLocked()
		}
	case msgCommit:
		if match && a.hasResult && !a.queried {
			a.commit = m.Peers
			e.notifyLocked()
		}
	case msgAbort:
		// A member gave up on key without its result. Only an attempt that
		// holds the result and waits for the commit acts on it, by asking
		// everyone (recovery): the abort may be stale, from an earlier try
		// over the same ring, so it never cancels a running all-reduce.
		if match && a.hasResult {
			a.aborted = true
			e.notifyLocked()
		}
	case msgStatusReq:
		return e.statusLocked(m, a, match)
	case msgJoinReq:
		return e.joinReplyLocked(from, m.Step)
	default:
		return &msg{Type: msgAck, Reason: fmt.Sprintf("unexpected message type %d", m.Type)}
	}
	return ack
}

// statusLocked answers a recovering member. Answering "no result" fences the
// attempt (it will never report ready); answering "result held" makes this
// node resolve the attempt by recovery too, ignoring a late commit.
func (e *engine) statusLocked(m *msg, a *attempt, match bool) *msg {
	r := &msg{Type: msgStatusResp, Step: e.nextStep}
	switch {
	case e.last != nil && e.last.step == m.Step:
		r.Flags, r.Ring, r.Peers = flagApplied, e.last.key, e.last.next
	case e.nextStep > m.Step+1 && e.state == stateTraining:
		r.Flags = flagApplied
	case match && a.hasResult:
		r.Flags = flagHasResult
		a.queried = true
		e.notifyLocked()
	case match:
		a.fenced = true
		a.cancel()
		e.notifyLocked()
	}
	return r
}

// joinReplyLocked records a join request and says whether the joiner is in
// the agreed list already (admitted) and from which step.
func (e *engine) joinReplyLocked(from peer.ID, boot uint64) *msg {
	if e.state != stateTraining {
		return &msg{Type: msgJoinResp, Reason: "not training"}
	}
	if containsMember(e.list, from, boot) {
		return &msg{Type: msgJoinResp, Flags: flagApplied, Step: e.nextStep, Peers: e.list}
	}
	if e.last != nil && containsMember(e.last.next, from, boot) {
		return &msg{Type: msgJoinResp, Flags: flagApplied, Step: e.last.step + 1, Peers: e.last.next}
	}
	e.joiners[from] = joinReq{boot: boot, at: time.Now()}
	return &msg{Type: msgJoinResp, Step: e.nextStep, Reason: "pending"}
}

func containsMember(ms []member, id peer.ID, inc uint64) bool {
	for _, m := range ms {
		if m.ID == id && m.Inc == inc {
			return true
		}
	}
	return false
}

// request sends m to p on a new stream and returns the reply.
func (n *Node) request(ctx context.Context, p peer.ID, m *msg) (*msg, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.RPCTimeout)
	defer cancel()
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "round"), p, RoundProtocol)
	if err != nil {
		return nil, fmt.Errorf("open round stream to %s: %w", p, err)
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	if err := writeMsg(s, m); err != nil {
		s.Reset()
		return nil, fmt.Errorf("send to %s: %w", p, err)
	}
	s.CloseWrite()
	r, err := readMsg(s)
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("reply from %s: %w", p, err)
	}
	s.Close()
	return r, nil
}

func (n *Node) send(ctx context.Context, p peer.ID, m *msg) error {
	_, err := n.request(ctx, p, m)
	return err
}

// broadcast sends m to every ring member but self, without waiting.
func (n *Node) broadcast(ring []member, m *msg) {
	for _, r := range ring {
		if r.ID == n.eng.self {
			continue
		}
		n.goRound(func() {
			// Commits and aborts must reach members even when the
			// attempt that sent them is over: use the node's context.
			if err := n.send(n.runCtx, r.ID, m); err != nil {
				n.log.Debug("round message not delivered", "peer", r.ID, "type", m.Type, "err", err)
			}
		})
	}
}
