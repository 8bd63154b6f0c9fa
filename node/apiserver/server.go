package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ringmesh/ringmesh/node/localapi"
)

// Server serves the local API of one node on its control socket.
type Server struct {
	b     Backend
	log   *slog.Logger
	ln    net.Listener
	path  string
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// trainer is the connection that joined: one trainer per node, so a
	// second process cannot take over or disturb the first one's rounds.
	trainer *conn
	// training: the trainer's mode from its last applied all-reduce.
	training localapi.TrainingStatus
	wg       sync.WaitGroup
	// stop ends the calls in flight (Close).
	stop context.CancelFunc
}

// Listen binds the control socket of dataDir for b. A socket file left by
// a node that is gone is replaced; one that answers means another node owns
// the data dir. A nil logger logs nothing.
func Listen(dataDir string, b Backend, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	path := filepath.Join(dataDir, localapi.SocketName)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("node: another node is running on %s (socket %s answers)", dataDir, path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("node: control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("node: control socket: %w", err)
	}
	return &Server{b: b, log: logger, ln: ln, path: path, conns: map[net.Conn]struct{}{}}, nil
}

// Serve accepts connections until ctx is done or Close is called. The
// calls it serves run until Close, not until ctx ends: a node stops
// answering when it shuts down, not when it is asked to.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.mu.Lock()
	s.stop = cancel
	s.mu.Unlock()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("node: accept: %w", err)
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(cctx, c)
		}()
	}
}

// Close stops the listener, ends the calls in flight, closes every
// connection, waits for their goroutines and removes the socket file.
func (s *Server) Close() {
	s.ln.Close()
	s.mu.Lock()
	if s.stop != nil {
		s.stop()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	os.Remove(s.path)
}

// conn is the state of one client connection.
type conn struct {
	bufs   map[uint64]*localapi.Mapping
	nextID uint64
	pid    int32 // the client's process (SO_PEERCRED); 0 when unknown
	fds    *localapi.FDConn
	// pending is the all-reduce in parts submitted on this connection and
	// not waited for yet, of step pendingStep; pendingBuf its buffer (not
	// to be unregistered).
	pending     Pending
	pendingStep uint64
	pendingBuf  uint64
	pendingMode training
}

// peerPID returns the pid of the process at the other end of a unix
// socket, or 0.
func peerPID(c net.Conn) int32 {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0
	}
	var pid int32
	raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = cred.Pid
		}
	})
	return pid
}

func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	st := &conn{bufs: map[uint64]*localapi.Mapping{}, pid: peerPID(nc)}
	var c net.Conn = nc
	if uc, ok := nc.(*net.UnixConn); ok {
		st.fds = localapi.NewFDConn(uc)
		c = st.fds
	}
	defer func() {
		if p := recover(); p != nil {
			// A request this node failed to handle ends its connection,
			// not the node.
			s.log.Error("api request panicked; connection closed", "pid", st.pid, "panic", p, "stack", string(debug.Stack()))
		}
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		// The trainer's round is stopped before its buffers are unmapped:
		// an all-reduce in parts runs while no request of it does.
		if s.detach(st) {
			s.b.Leave("trainer disconnected")
		}
		for _, m := range st.bufs {
			m.Close()
		}
	}()
	for {
		var req localapi.Request
		if err := localapi.ReadFrame(c, &req); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Warn("bad api request", "err", err)
				localapi.WriteFrame(c, localapi.Response{Code: localapi.CodeBadRequest, Error: err.Error()})
			}
			return
		}
		resp := s.handle(ctx, st, &req)
		if st.fds != nil {
			st.fds.DropFDs() // descriptors the request did not use
		}
		resp.ID = req.ID
		if resp.Code == "" {
			resp.OK = true
		}
		if err := localapi.WriteFrame(c, resp); err != nil {
			return
		}
	}
}
