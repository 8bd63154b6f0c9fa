package mesh

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// probeProtocol is the indirect probe stream protocol (SWIM's ping-req): the
// requester writes one probe request and closes its side; the helper pings
// the target and writes one probe reply.
const probeProtocol = "/ringmesh/probe/1"

// indirectTimeout bounds the indirect phase of a probe round, and a helper's
// handling of one request: opening the stream, the helper's ping of the
// target (ProbeTimeout) and the reply.
func (m *Mesh) indirectTimeout() time.Duration { return 2 * m.cfg.ProbeTimeout }

// probeRound pings id directly and, if that fails, asks helpers to ping it.
func (m *Mesh) probeRound(ctx context.Context, id peer.ID, helpers []peer.ID) probeResult {
	start := time.Now()
	ok := m.ping(ctx, id)
	m.metrics.Probe(ok, time.Since(start))
	if ok || ctx.Err() != nil {
		return probeResult{reached: ok}
	}
	return m.probeIndirect(ctx, id, helpers)
}

// ping pings p once, within ProbeTimeout.
func (m *Mesh) ping(ctx context.Context, p peer.ID) bool {
	// Our own timers pace probes; libp2p's dial backoff must not turn an
	// earlier failed dial into an instant, false failure.
	m.clearDialBackoff(p)
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ProbeTimeout)
	defer cancel()
	select {
	case r := <-ping.Ping(ctx, m.host, p):
		return r.Error == nil
	case <-ctx.Done():
		return false
	}
}

// probeIndirect asks every helper, in parallel and within indirectTimeout,
// to ping target. The first helper that reached it ends the round; those
// that tried and could not are the nacks; a helper that did not answer
// counts for nothing.
func (m *Mesh) probeIndirect(ctx context.Context, target peer.ID, helpers []peer.ID) probeResult {
	var r probeResult
	if len(helpers) == 0 {
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, m.indirectTimeout())
	defer cancel() // ends the askers still running
	type answer struct {
		helper  peer.ID
		reached bool
		err     error
	}
	answers := make(chan answer, len(helpers)) // never blocks an asker
	for _, h := range helpers {
		go func() {
			reached, err := m.askHelper(ctx, h, target)
			answers <- answer{helper: h, reached: reached, err: err}
		}()
	}
	for range helpers {
		a := <-answers // every asker answers by ctx's deadline
		switch {
		case a.err != nil:
			m.logger.Debug("indirect probe: no answer", "helper", a.helper, "peer", target, "err", a.err)
		case a.reached:
			return probeResult{reached: true}
		default:
			r.nacks = append(r.nacks, a.helper)
		}
	}
	return r
}

// askHelper asks helper to ping target and returns its answer.
func (m *Mesh) askHelper(ctx context.Context, helper, target peer.ID) (bool, error) {
	req, err := encodeProbeRequest(nil, &probeRequest{Mesh: m.cfg.Mesh, Target: target})
	if err != nil {
		return false, err
	}
	s, err := m.host.NewStream(ctx, helper, probeProtocol)
	if err != nil {
		return false, fmt.Errorf("open probe stream: %w", err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if _, err := s.Write(req); err != nil {
		s.Reset()
		return false, fmt.Errorf("write probe request: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return false, fmt.Errorf("close probe request: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(s, maxProbeReplyLen+1))
	if err != nil {
		s.Reset()
		return false, fmt.Errorf("read probe reply: %w", err)
	}
	reached, err := decodeProbeReply(b)
	if err != nil {
		s.Reset()
		return false, fmt.Errorf("probe reply: %w", err)
	}
	return reached, nil
}

// probeHandler serves probe requests while Run runs (ctx): at most maxProbes
// at once, each within indirectTimeout.
func (m *Mesh) probeHandler(ctx context.Context) network.StreamHandler {
	var busy atomic.Int32
	return func(s network.Stream) {
		if busy.Add(1) > maxProbes {
			busy.Add(-1)
			s.Reset()
			return
		}
		defer busy.Add(-1)
		m.serveProbe(ctx, s)
	}
}

// serveProbe answers one probe request. A request that does not fit its
// sender's role (malformed, another mesh, about the requester itself or
// about us) is dropped and counted; one from a peer that is not a live
// member in our view, or about a peer we do not know, gets no answer (the
// requester counts that as no evidence either way).
func (m *Mesh) serveProbe(ctx context.Context, s network.Stream) {
	ctx, cancel := context.WithTimeout(ctx, m.indirectTimeout())
	defer cancel()
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	from := s.Conn().RemotePeer()
	b, err := io.ReadAll(io.LimitReader(s, maxProbeRequestLen+1))
	if err != nil {
		s.Reset()
		return
	}
	q, err := decodeProbeRequest(b)
	reason := ""
	switch {
	case err != nil:
		reason = reasonMalformed
	case q.Mesh != m.cfg.Mesh:
		reason = reasonWrongMesh
	case q.Target == from || q.Target == m.self:
		reason = reasonBadProbe
	}
	if reason != "" {
		m.metrics.InvalidMessage(reason)
		m.logger.Warn("invalid probe request dropped", "reason", reason, "peer", from)
		s.Reset()
		return
	}
	if fromLive, known := m.probeRoles(from, q.Target); !fromLive || !known {
		m.logger.Debug("probe request not served", "peer", from, "target", q.Target,
			"requester_live", fromLive, "target_known", known)
		s.Reset()
		return
	}
	reached := m.ping(ctx, q.Target)
	if _, err := s.Write(encodeProbeReply(nil, reached)); err != nil {
		s.Reset()
	}
}

// probeRoles reports, from the latest view, whether from is a live member
// and whether target is a member at all.
func (m *Mesh) probeRoles(from, target peer.ID) (fromLive, targetKnown bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, x := range m.others {
		switch x.ID {
		case from:
			fromLive = x.State == Alive || x.State == Suspect
		case target:
			targetKnown = true
		}
	}
	return fromLive, targetKnown
}
