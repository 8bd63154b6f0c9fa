package checkpoint

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// MaxStreams bounds concurrently served streams; further streams are
	// reset. Each holds one chunk buffer (ChunkSize bytes). Default 64.
	MaxStreams int
	// MaxStreamsPerPeer bounds the streams one peer may hold open, so one
	// peer cannot take all of MaxStreams. Default 8 (a fetcher opens
	// FetcherConfig.StreamsPerProvider, default 2).
	MaxStreamsPerPeer int
	// IdleTimeout is how long a stream may wait between requests. Default
	// 60 s.
	IdleTimeout time.Duration
	// WriteTimeout bounds writing one reply (a whole chunk): it must allow
	// the slowest link expected (4 MiB at 1 MB/s = 4 s). Default 60 s.
	WriteTimeout time.Duration
}

// DefaultServerConfig returns the production defaults.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{MaxStreams: 64, MaxStreamsPerPeer: 8, IdleTimeout: 60 * time.Second, WriteTimeout: 60 * time.Second}
}

// LocalServerConfig is a preset for tests.
func LocalServerConfig() ServerConfig {
	c := DefaultServerConfig()
	c.IdleTimeout = 30 * time.Second
	return c
}

// Validate checks the fields.
func (c ServerConfig) Validate() error {
	switch {
	case c.MaxStreams < 1:
		return fmt.Errorf("checkpoint: MaxStreams %d, want at least 1", c.MaxStreams)
	case c.MaxStreamsPerPeer < 1 || c.MaxStreamsPerPeer > c.MaxStreams:
		return fmt.Errorf("checkpoint: MaxStreamsPerPeer %d outside [1, MaxStreams=%d]", c.MaxStreamsPerPeer, c.MaxStreams)
	case c.IdleTimeout <= 0 || c.WriteTimeout <= 0:
		return fmt.Errorf("checkpoint: IdleTimeout %v and WriteTimeout %v must be > 0", c.IdleTimeout, c.WriteTimeout)
	}
	return nil
}

// errReplied marks a protocol error already answered with an error reply.
var errReplied = errors.New("checkpoint: bad request answered")

// Server serves the local store over ProtocolID: manifests by root and
// verified chunks by index, to any peer the host lets connect.
type Server struct {
	cfg     ServerConfig
	h       host.Host
	store   *Store
	log     *slog.Logger
	metrics Metrics

	mu      sync.Mutex
	running bool
	ctx     context.Context
	active  int
	perPeer map[peer.ID]int
	wg      sync.WaitGroup
}

// NewServer returns a Server; it registers nothing until Run.
func NewServer(cfg ServerConfig, h host.Host, store *Store, logger *slog.Logger, metrics Metrics) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, h: h, store: store, perPeer: make(map[peer.ID]int),
		log: orDiscard(logger).With("component", "checkpoint"), metrics: orNop(metrics)}, nil
}

// Run registers the stream handler, serves until ctx is done, then removes
// the handler, resets open streams and waits for their handlers to return.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("checkpoint: server already running")
	}
	s.running, s.ctx = true, ctx
	s.mu.Unlock()
	s.h.SetStreamHandler(ProtocolID, s.handle)
	<-ctx.Done()
	s.h.RemoveStreamHandler(ProtocolID)
	s.mu.Lock()
	s.running = false
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// enter admits a stream from p if the server runs and is under its limits.
func (s *Server) enter(p peer.ID) (context.Context, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running || s.active >= s.cfg.MaxStreams || s.perPeer[p] >= s.cfg.MaxStreamsPerPeer {
		return nil, false
	}
	s.active++
	s.perPeer[p]++
	s.wg.Add(1)
	return s.ctx, true
}

func (s *Server) leave(p peer.ID) {
	s.mu.Lock()
	s.active--
	if s.perPeer[p]--; s.perPeer[p] == 0 {
		delete(s.perPeer, p)
	}
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) handle(st network.Stream) {
	p := st.Conn().RemotePeer()
	ctx, ok := s.enter(p)
	if !ok {
		s.log.Debug("checkpoint stream refused: limit", "peer", p)
		st.Reset()
		return
	}
	defer s.leave(p)
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	err := s.serve(st)
	if errors.Is(err, errReplied) {
		// Closed rather than reset: a reset would discard the error reply.
		st.Close()
		return
	}
	if err != nil {
		st.Reset()
		if ctx.Err() == nil {
			s.log.Debug("checkpoint stream ended", "peer", st.Conn().RemotePeer(), "err", err)
		}
		return
	}
	st.Close()
}

// serve answers requests until the peer closes its side (nil) or a
// protocol or I/O error (returned; the caller resets the stream).
func (s *Server) serve(st network.Stream) error {
	br := bufio.NewReaderSize(st, 64)
	var req [maxRequestLen]byte
	var out []byte // reply buffer, grown to the largest chunk served
	pins := make(map[Root]func())
	defer func() {
		for _, release := range pins {
			release()
		}
	}()
	for {
		st.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		var root Root
		var chunk int64
		typ, body, err := readFrame(br, maxRequestLen, req[:])
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err == nil {
			root, chunk, err = decodeRequest(typ, body)
		}
		if err != nil {
			if errors.Is(err, ErrBadFrame) && s.reply(st, encodeError(codeBadRequest, err.Error())) == nil {
				return fmt.Errorf("%w: %w", errReplied, err)
			}
			return err
		}
		s.pin(pins, root)
		var msg []byte
		if chunk < 0 {
			msg = s.manifestReply(root)
		} else {
			msg, out = s.chunkReply(root, chunk, out)
		}
		if err := s.reply(st, msg); err != nil {
			return err
		}
	}
}

// maxPinsPerStream bounds the checkpoints one stream keeps pinned.
const maxPinsPerStream = 4

// pin keeps root from retention while the stream serves it.
func (s *Server) pin(pins map[Root]func(), root Root) {
	if _, ok := pins[root]; ok || len(pins) >= maxPinsPerStream {
		return
	}
	if release, err := s.store.Pin(root); err == nil {
		pins[root] = release
	}
}

func (s *Server) reply(st network.Stream, msg []byte) error {
	st.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	_, err := st.Write(msg)
	return err
}

func (s *Server) manifestReply(root Root) []byte {
	mb, err := s.store.manifestBytes(root)
	if err != nil {
		return encodeError(codeUnknownRoot, "unknown root "+root.String())
	}
	b := make([]byte, frameHeaderLen+len(mb))
	putHeader(b, frameRespManifest, len(mb))
	copy(b[frameHeaderLen:], mb)
	return b
}

// chunkReply reads chunk i into buf (grown as needed) and returns the reply.
func (s *Server) chunkReply(root Root, i int64, buf []byte) (msg, grown []byte) {
	m, err := s.store.Manifest(root)
	if err != nil {
		return encodeError(codeUnknownRoot, "unknown root "+root.String()), buf
	}
	if i >= int64(len(m.Chunks)) {
		return encodeError(codeOutOfRange, fmt.Sprintf("chunk %d of %d", i, len(m.Chunks))), buf
	}
	const pre = frameHeaderLen + 4
	if need := pre + int(m.ChunkSize); cap(buf) < need {
		buf = make([]byte, need)
	}
	n, err := s.store.ReadChunk(root, int(i), buf[pre:cap(buf)])
	switch {
	case errors.Is(err, ErrIncomplete):
		return encodeError(codeNotHeld, fmt.Sprintf("chunk %d not held", i)), buf
	case errors.Is(err, ErrUnknownRoot):
		return encodeError(codeUnknownRoot, "unknown root "+root.String()), buf
	case err != nil:
		s.log.Warn("read chunk failed", "root", root, "chunk", i, "err", err)
		return encodeError(codeInternal, "read failed"), buf
	}
	putHeader(buf, frameRespChunk, 4+n)
	binary.BigEndian.PutUint32(buf[frameHeaderLen:], uint32(i))
	s.metrics.ChunkServed(n)
	return buf[:pre+n], buf
}
