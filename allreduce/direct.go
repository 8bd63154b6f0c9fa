package allreduce

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Direct lanes (protocol version 4): a lane of at least
// Config.DirectMinBytes runs on its own TCP connection instead of its
// libp2p stream, so the bulk path has no muxer window, no second cipher
// and full-size writes.
//
// Right after the ack the receiver writes a ctrlLane message on the
// stream: laneNone (the lane stays on the stream), or laneOffer with the
// port of its lane listener on the IP the sender reached it on and a
// one-time random token. The sender connects to that IP and port, writes
// laneMagic and the token, and runs libp2p's TLS handshake as client bound
// to the receiver's peer ID; with TrustedNetwork (plaintext) it instead
// waits for the listener's confirmation (laneAck of the token), so that
// no gradient goes to another process that holds the offered port
// (header version 5). It then writes one
// decision byte on the stream: laneDirect (and closes the stream; the lane
// runs on the connection) or laneStay (the connection failed; the lane
// runs on the stream: the fallback, logged and counted). The receiver's
// listener reads the magic and token into a fixed buffer under a deadline,
// drops a connection whose token is not pending before anything else, runs
// the TLS server handshake bound to the sender's peer ID (or, in
// plaintext, writes the confirmation), and hands the
// connection to the waiting Accept. From there on the lane's bytes are
// exactly those it would send on the stream.
const (
	laneMagic    = "RMLN"
	laneTokenLen = 32
	laneDirect   = 'D'
	laneStay     = 'S'

	// maxUnauthLanes caps the inbound lane connections that have not yet
	// presented a pending token, in all and per remote IP: more are
	// refused at once.
	maxUnauthLanes      = 64
	maxUnauthLanesPerIP = 8

	// laneDialTimeout bounds the TCP connect of a direct lane; a peer
	// whose lane port cannot be reached is remembered for laneFailMemory,
	// during which its lanes stay on streams without trying.
	laneDialTimeout = 5 * time.Second
	laneFailMemory  = 5 * time.Minute

	// laneListenRetry is how long after a failed listen on a local IP
	// lanes arriving there stay on streams before the listen is tried
	// again.
	laneListenRetry = time.Minute

	// portsWarnEvery bounds the warning about running out of local
	// ports for lane connections.
	portsWarnEvery = time.Minute
)

// LaneStats says how this node's lanes ran: Direct, Fallback and Stream
// count the lanes it sent (each lane of each round it dialled), Refused
// the inbound lane connections it dropped (no valid token, a failed
// handshake, over the limits), PortsExhausted the lane dials that failed
// because this host had no local port left (each also a Fallback).
type LaneStats struct {
	// Mode is "tls" (direct lanes under libp2p's TLS), "plaintext"
	// (TrustedNetwork) or "off" (every lane on its libp2p stream).
	Mode           string `json:"mode"`
	Direct         uint64 `json:"direct"`
	Fallback       uint64 `json:"fallback"`
	Stream         uint64 `json:"stream"`
	Refused        uint64 `json:"refused"`
	PortsExhausted uint64 `json:"ports_exhausted"`
}

// laneCounters are LaneStats' counters.
type laneCounters struct {
	direct, fallback, stream, refused, portsExhausted atomic.Uint64
}

// relayed reports whether c runs through a relay (or is otherwise
// limited): its multiaddrs' IPs are the relay's, not the peer's, so no
// lane connection is offered or dialled over it.
func relayed(c network.Conn) bool {
	if c.Stat().Limited {
		return true
	}
	for _, a := range []ma.Multiaddr{c.LocalMultiaddr(), c.RemoteMultiaddr()} {
		if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
			return true
		}
	}
	return false
}

// portsExhausted reports whether a lane dial failed because this host has
// no local (ephemeral) port left to connect from: with every lane of every
// part and attempt on its own connection, closed ones pile up in
// TIME_WAIT.
func portsExhausted(err error) bool {
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EADDRINUSE)
}

// pendingLane is an offered token waiting for its connection. done (under
// the transport's mu) says the offering Accept has returned; a connection
// arriving after that is reset instead of handed over.
type pendingLane struct {
	from peer.ID
	ip   string          // of the stream the offer went out on ("" unknown)
	ch   chan laneResult // capacity 1
	done bool
}

type laneResult struct {
	c   *laneConn
	err error
}

// directLanes reports whether a lane with header h is offered a direct
// connection.
func (t *StreamTransport) directLanes(h Header) bool {
	if t.mode == LaneModeOff {
		return false
	}
	lane := int64(h.DType.WireLen(int(h.Count))) / int64(max(h.Lanes, 1))
	return lane >= int64(t.cfg.DirectMinBytes)
}

// authTimeout bounds reading a lane connection's token and its TLS
// handshake.
func (t *StreamTransport) authTimeout() time.Duration {
	return min(t.cfg.FrameTimeout, 10*time.Second)
}

// offerLane follows the ack of the acked stream s from `from`: it offers a
// direct connection (or says there is none) and returns what the lane runs
// on. If ctx ends first it returns s with ctx's error, so the caller can
// send its abort notice on it.
func (t *StreamTransport) offerLane(ctx context.Context, from peer.ID, h Header, s *trackedStream) (Stream, error) {
	port, ok := 0, t.directLanes(h)
	if ok {
		port, ok = t.laneListener(s)
	}
	if !ok {
		if err := t.writeControl(s, control{Type: ctrlLane, Code: laneNone}); err != nil {
			return nil, fmt.Errorf("write lane answer: %w", err)
		}
		return s, nil
	}
	var tok [laneTokenLen]byte
	_, _ = rand.Read(tok[:])
	p := &pendingLane{from: from, ch: make(chan laneResult, 1)}
	if ip, err := manet.ToIP(s.Conn().RemoteMultiaddr()); err == nil {
		p.ip = ip.String()
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = s.Reset()
		return nil, ErrClosed
	}
	t.pending[tok] = p
	if p.ip != "" {
		t.expected[p.ip]++
	}
	t.mu.Unlock()
	defer t.unoffer(tok, p)
	if err := t.writeControl(s, control{Type: ctrlLane, Code: laneOffer, Port: uint16(port), Token: tok}); err != nil {
		return nil, fmt.Errorf("write lane offer: %w", err)
	}

	// The sender's decision: a read deadline (moved to now when ctx ends)
	// rather than a reset, so an aborting round can still send its notice.
	_ = s.SetReadDeadline(time.Now().Add(t.cfg.StartTimeout))
	stop := context.AfterFunc(ctx, func() { _ = s.SetReadDeadline(time.Now()) })
	var d [1]byte
	_, err := io.ReadFull(s, d[:])
	stop()
	if ctx.Err() != nil {
		return s, ctx.Err()
	}
	if err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("read lane decision: %w", noEOF(err))
	}
	_ = s.SetReadDeadline(time.Time{})
	switch d[0] {
	case laneStay:
		return s, nil
	case laneDirect:
	default:
		_ = s.Reset()
		return nil, fmt.Errorf("%w: lane decision %d", ErrProtocol, d[0])
	}
	timer := time.NewTimer(t.cfg.FrameTimeout)
	defer timer.Stop()
	select {
	case r := <-p.ch:
		if r.err != nil {
			_ = s.Reset()
			return nil, fmt.Errorf("lane connection: %w", r.err)
		}
		_ = s.Close()
		return r.c, nil
	case <-ctx.Done():
		return s, ctx.Err()
	case <-t.ctx.Done():
		_ = s.Reset()
		return nil, ErrClosed
	case <-timer.C:
		_ = s.Reset()
		return nil, fmt.Errorf("%w: the lane connection from %s did not arrive within %v", ErrTimeout, from, t.cfg.FrameTimeout)
	}
}

// unoffer withdraws a token once its Accept returns and resets a
// connection that was handed over but not taken.
func (t *StreamTransport) unoffer(tok [laneTokenLen]byte, p *pendingLane) {
	t.mu.Lock()
	if t.pending[tok] == p {
		delete(t.pending, tok)
	}
	if !p.done && p.ip != "" {
		if t.expected[p.ip]--; t.expected[p.ip] <= 0 {
			delete(t.expected, p.ip)
		}
	}
	p.done = true
	var left *laneConn
	select {
	case r := <-p.ch:
		left = r.c
	default:
	}
	t.mu.Unlock()
	if left != nil {
		_ = left.Reset()
	}
}

// writeControl writes one control message on s; on failure s is reset.
func (t *StreamTransport) writeControl(s Stream, c control) error {
	_ = s.SetWriteDeadline(time.Now().Add(t.cfg.FrameTimeout))
	if _, err := s.Write(appendControl(nil, c)); err != nil {
		_ = s.Reset()
		return err
	}
	_ = s.SetWriteDeadline(time.Time{})
	return nil
}

// laneListener returns the port of the lane listener on the IP s's
// connection arrived at, starting one if needed; false when the
// connection is relayed or has no IP, or the listener cannot be opened
// (tried again laneListenRetry after a failure).
func (t *StreamTransport) laneListener(s *trackedStream) (int, bool) {
	c := s.Conn()
	if relayed(c) {
		return 0, false
	}
	ip, err := manet.ToIP(c.LocalMultiaddr())
	if err != nil {
		return 0, false
	}
	key := ip.String()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, false
	}
	if ln, ok := t.listeners[key]; ok {
		return ln.Addr().(*net.TCPAddr).Port, true
	}
	if at, ok := t.listenFailed[key]; ok && time.Since(at) < laneListenRetry {
		return 0, false
	}
	ln, err := t.listen("tcp", net.JoinHostPort(key, "0"))
	if err != nil {
		t.listenFailed[key] = time.Now()
		t.log.Warn("cannot open a lane listener; lanes arriving on this address stay on libp2p streams until it is tried again", "ip", key, "err", err, "retry_after", laneListenRetry)
		return 0, false
	}
	delete(t.listenFailed, key)
	t.listeners[key] = ln
	t.log.Info("lane listener", "addr", ln.Addr().String(), "mode", t.mode)
	t.handles.Add(1)
	go t.acceptLanes(ln)
	return ln.Addr().(*net.TCPAddr).Port, true
}

// acceptLanes runs a lane listener until the transport closes.
func (t *StreamTransport) acceptLanes(ln net.Listener) {
	defer t.handles.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if t.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Warn("lane listener", "err", err)
			select { // e.g. out of file descriptors: do not spin
			case <-time.After(50 * time.Millisecond):
			case <-t.ctx.Done():
				return
			}
			continue
		}
		raw := nc.(*net.TCPConn)
		ip := raw.RemoteAddr().(*net.TCPAddr).IP.String()
		t.mu.Lock()
		// A member's lane comes from an IP this node offered a lane to:
		// outsiders filling the global cap cannot deny it (its own cap
		// grows with the offers made to that IP).
		member := t.expected[ip]
		if t.closed || t.unauth[ip] >= maxUnauthLanesPerIP+member || (member == 0 && t.unauthN >= maxUnauthLanes) {
			closed := t.closed
			t.mu.Unlock()
			if !closed {
				t.refuse(raw, "too many unauthenticated lane connections", nil)
			} else {
				resetTCP(raw)
			}
			continue
		}
		t.unauthN++
		t.unauth[ip]++
		t.authing[raw] = struct{}{}
		t.handles.Add(1)
		t.mu.Unlock()
		go t.authLane(raw, ip)
	}
}

// refuse counts, logs and resets an inbound lane connection (once the
// transport is closing it only resets it: Close reset it).
func (t *StreamTransport) refuse(raw *net.TCPConn, why string, err error) {
	if t.ctx.Err() != nil {
		resetTCP(raw)
		return
	}
	n := t.lanes.refused.Add(1)
	t.refuseLog.Do(func() {
		t.log.Warn("refused lane connection (logged at most every 10 s)", "remote", raw.RemoteAddr().String(), "reason", why, "err", err, "refused_total", n)
	})
	resetTCP(raw)
}

// authLane reads an inbound lane connection's token, secures it and hands
// it to the Accept that offered the token.
func (t *StreamTransport) authLane(raw *net.TCPConn, ip string) {
	defer t.handles.Done()
	released := false
	release := func() {
		if released {
			return
		}
		released = true
		t.mu.Lock()
		delete(t.authing, raw)
		t.unauthN--
		if t.unauth[ip]--; t.unauth[ip] <= 0 {
			delete(t.unauth, ip)
		}
		t.mu.Unlock()
	}
	defer release()
	timeout := t.authTimeout()
	_ = raw.SetDeadline(time.Now().Add(timeout))
	var b [len(laneMagic) + laneTokenLen]byte
	if _, err := io.ReadFull(raw, b[:]); err != nil {
		t.refuse(raw, "no token", err)
		return
	}
	if string(b[:len(laneMagic)]) != laneMagic {
		t.refuse(raw, "not a lane connection", nil)
		return
	}
	tok := [laneTokenLen]byte(b[len(laneMagic):])
	t.mu.Lock()
	p := t.pending[tok]
	if p != nil {
		delete(t.pending, tok) // one use
	}
	t.mu.Unlock()
	if p == nil {
		t.refuse(raw, "unknown or expired token", nil)
		return
	}
	var c net.Conn = raw
	if t.sec == nil {
		// Plaintext: confirm to the dialler that it reached this lane
		// listener (TLS's handshake does that under TLS).
		ack := laneAck(tok)
		if _, err := raw.Write(ack[:]); err != nil {
			t.refuse(raw, "lane confirmation not written", err)
			t.handOver(p, laneResult{err: fmt.Errorf("confirm the lane of %s: %w", p.from, err)})
			return
		}
	} else {
		ctx, cancel := context.WithTimeout(t.ctx, timeout)
		sc, err := t.sec.SecureInbound(ctx, raw, p.from)
		cancel()
		if err != nil {
			t.refuse(raw, "TLS handshake failed", err)
			t.handOver(p, laneResult{err: fmt.Errorf("TLS handshake with %s: %w", p.from, err)})
			return
		}
		c = sc
	}
	release()
	_ = raw.SetDeadline(time.Time{})
	t.handOver(p, laneResult{c: &laneConn{Conn: c, raw: raw, t: t}})
}

// handOver gives r to p's Accept, or resets r's connection when that
// Accept has returned or the transport is closed.
func (t *StreamTransport) handOver(p *pendingLane, r laneResult) {
	t.mu.Lock()
	if !t.closed && !p.done {
		if r.c != nil {
			t.conns[r.c] = struct{}{}
		}
		p.ch <- r
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	if r.c != nil {
		resetTCP(r.c.raw)
	}
}

// takeLane follows the ack on the dialled stream s: it reads the
// receiver's offer and returns what the lane runs on.
func (t *StreamTransport) takeLane(ctx context.Context, to peer.ID, s *trackedStream) (Stream, error) {
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	fail := resetter(ctx, s)
	_ = s.SetReadDeadline(time.Now().Add(t.cfg.FrameTimeout))
	c, err := readControl(s)
	if err != nil {
		return nil, fail(fmt.Errorf("read lane offer: %w", noEOF(err)))
	}
	_ = s.SetReadDeadline(time.Time{})
	switch {
	case c.Type == ctrlAbort:
		_ = s.Close()
		return nil, &abortVerdict{c}
	case c.Type != ctrlLane:
		return nil, fail(fmt.Errorf("%w: control message %d instead of a lane offer", ErrProtocol, c.Type))
	case c.Code == laneNone:
		t.lanes.stream.Add(1)
		return s, nil
	case t.mode == LaneModeOff || relayed(s.Conn()):
		// Direct lanes are off here (no security transport): decline the
		// offer and stay on the stream, never dialling in plaintext. Over
		// a relayed connection the offer's address would be the relay's
		// (a lying member could aim the dial at any port there): stay
		// too.
		if err := t.declineLane(s); err != nil {
			return nil, fail(err)
		}
		t.lanes.stream.Add(1)
		return s, nil
	}
	lc, cerr := t.connectLane(ctx, to, s, c)
	if ctx.Err() != nil {
		if lc != nil {
			_ = lc.Reset()
		}
		return nil, fail(ctx.Err())
	}
	decision := byte(laneDirect)
	if cerr != nil {
		decision = laneStay
	}
	_ = s.SetWriteDeadline(time.Now().Add(t.cfg.FrameTimeout))
	if _, err := s.Write([]byte{decision}); err != nil {
		if lc != nil {
			_ = lc.Reset()
		}
		return nil, fail(fmt.Errorf("write lane decision: %w", err))
	}
	_ = s.SetWriteDeadline(time.Time{})
	if cerr != nil {
		t.lanes.fallback.Add(1)
		return s, nil
	}
	_ = s.Close()
	t.lanes.direct.Add(1)
	return lc, nil
}

// connectLane opens, authenticates and secures the direct connection the
// receiver `to` offered in c, or says why it cannot.
// declineLane answers a lane offer: stay on the stream.
func (t *StreamTransport) declineLane(s *trackedStream) error {
	_ = s.SetWriteDeadline(time.Now().Add(t.cfg.FrameTimeout))
	if _, err := s.Write([]byte{laneStay}); err != nil {
		return fmt.Errorf("write lane decision: %w", err)
	}
	_ = s.SetWriteDeadline(time.Time{})
	return nil
}

func (t *StreamTransport) connectLane(ctx context.Context, to peer.ID, s *trackedStream, c control) (*laneConn, error) {
	t.mu.Lock()
	failedAt, failed := t.failed[to]
	t.mu.Unlock()
	if failed && time.Since(failedAt) < laneFailMemory {
		return nil, errors.New("recent direct connection failure")
	}
	lc, err := t.dialLane(ctx, to, s, c)
	if err != nil && ctx.Err() == nil && portsExhausted(err) {
		// This host's fault, not the peer's: no failure memory (the dial
		// fails at once, and lanes go direct again when ports free up).
		n := t.lanes.portsExhausted.Add(1)
		t.portsLog.Do(func() {
			t.log.Warn("this host ran out of local ports for direct lane connections (closed lane connections wait in TIME_WAIT); lanes fall back to libp2p streams. Use fewer lanes (--allreduce-lanes) or larger parts, or widen net.ipv4.ip_local_port_range and set net.ipv4.tcp_tw_reuse=1 (logged at most every minute)",
				"peer", to, "err", err, "ports_exhausted_total", n)
		})
		return nil, err
	}
	if err != nil && ctx.Err() == nil {
		t.mu.Lock()
		t.failed[to] = time.Now()
		t.mu.Unlock()
		t.log.Warn("direct lane connection failed; lanes to this peer stay on libp2p streams", "peer", to, "err", err, "retry_after", laneFailMemory)
	}
	return lc, err
}

func (t *StreamTransport) dialLane(ctx context.Context, to peer.ID, s *trackedStream, c control) (*laneConn, error) {
	if t.mode != LaneModePlaintext && (t.mode != LaneModeTLS || t.sec == nil) {
		// Plaintext goes only on the lanes of a trusted network.
		return nil, fmt.Errorf("no security transport for a lane in mode %s", t.mode)
	}
	ip, err := manet.ToIP(s.Conn().RemoteMultiaddr())
	if err != nil {
		return nil, fmt.Errorf("no IP address to connect to: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, laneDialTimeout+t.authTimeout())
	defer cancel()
	defer context.AfterFunc(t.ctx, cancel)() // Close ends the dial too
	nc, err := t.dial(dctx, "tcp", net.JoinHostPort(ip.String(), strconv.Itoa(int(c.Port))))
	if err != nil {
		return nil, err
	}
	raw := nc.(*net.TCPConn)
	dl, _ := dctx.Deadline()
	_ = raw.SetDeadline(dl)
	b := append([]byte(laneMagic), c.Token[:]...)
	if _, err := raw.Write(b); err != nil {
		resetTCP(raw)
		return nil, fmt.Errorf("write token: %w", err)
	}
	var conn net.Conn = raw
	if t.mode == LaneModePlaintext {
		// Nothing else says that the listener that took the connection is
		// the receiver's (another process may hold the offered port):
		// wait for its confirmation before sending plaintext.
		var got [laneAckLen]byte
		if _, err := io.ReadFull(raw, got[:]); err != nil || got != laneAck(c.Token) {
			resetTCP(raw)
			if err == nil {
				err = errors.New("wrong confirmation")
			}
			return nil, fmt.Errorf("the lane's listener did not confirm (another process on the offered port?): %w", err)
		}
	}
	if t.mode == LaneModeTLS {
		sc, err := t.sec.SecureOutbound(dctx, raw, to)
		if err != nil {
			resetTCP(raw)
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		conn = sc
	}
	_ = raw.SetDeadline(time.Time{})
	lc := &laneConn{Conn: conn, raw: raw, t: t}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		resetTCP(raw)
		return nil, ErrClosed
	}
	t.conns[lc] = struct{}{}
	t.mu.Unlock()
	return lc, nil
}

// laneAckLen is the length of a plaintext lane's confirmation.
const laneAckLen = 8

// laneAck is what a lane listener answers a plaintext lane's token with:
// it read the token, so it is a ringmesh lane listener that was offered
// to the dialler, not another process that holds the port.
func laneAck(tok [laneTokenLen]byte) [laneAckLen]byte {
	h := sha256.Sum256(append([]byte(laneMagic+" ack "), tok[:]...))
	return [laneAckLen]byte(h[:laneAckLen])
}

// resetTCP aborts a TCP connection: the peer's reads and writes fail.
func resetTCP(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// laneConn is a direct lane connection as a Stream.
type laneConn struct {
	net.Conn // the TLS connection, or raw under TrustedNetwork
	raw      *net.TCPConn
	t        *StreamTransport
	eof      atomic.Bool // a Read returned io.EOF
}

var _ Stream = (*laneConn)(nil)

func (c *laneConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err == io.EOF {
		c.eof.Store(true)
	}
	return n, err
}

// CloseWrite sends TLS's close_notify, or a TCP FIN in plaintext: the
// peer reads EOF after the data.
func (c *laneConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.raw.CloseWrite()
}

func (c *laneConn) CloseRead() error { return c.raw.CloseRead() }

// Close ends our direction. When the peer's EOF has not been read yet the
// connection is drained (for at most a few seconds, until the peer
// closes or resets) before the socket closes, because closing a socket
// with unread data resets it and could destroy an abort notice just sent.
func (c *laneConn) Close() error {
	err := c.CloseWrite()
	if c.eof.Load() {
		c.t.forgetConn(c)
		return errors.Join(err, c.raw.Close())
	}
	c.t.linger(c)
	return err
}

func (c *laneConn) Reset() error {
	c.t.forgetConn(c)
	resetTCP(c.raw)
	return nil
}

// writeFrame writes a frame's length prefix and payload in one system call
// in plaintext (TLS makes records of them anyway).
func (c *laneConn) writeFrame(l, payload []byte) error {
	if c.Conn == net.Conn(c.raw) {
		bufs := net.Buffers{l, payload}
		_, err := bufs.WriteTo(c.raw)
		return err
	}
	if _, err := c.Conn.Write(l); err != nil {
		return err
	}
	_, err := c.Conn.Write(payload)
	return err
}

func (t *StreamTransport) forgetConn(c *laneConn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// linger drains c in the background, then closes it.
func (t *StreamTransport) linger(c *laneConn) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = c.Reset()
		return
	}
	t.handles.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.handles.Done()
		_ = c.raw.SetReadDeadline(time.Now().Add(min(t.cfg.FrameTimeout, 5*time.Second)))
		_, _ = io.Copy(io.Discard, c.raw)
		t.forgetConn(c)
		_ = c.raw.Close()
	}()
}
