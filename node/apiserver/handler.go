package apiserver

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ringmesh/ringmesh/node/localapi"
)

// handler answers one op of a connection. ctx ends when the server closes.
type handler func(s *Server, ctx context.Context, c *conn, req *localapi.Request) localapi.Response

// handlers is the local API, by op.
var handlers = map[string]handler{
	localapi.OpHello:           (*Server).hello,
	localapi.OpRegister:        (*Server).register,
	localapi.OpRegisterFD:      (*Server).registerFD,
	localapi.OpUnregister:      (*Server).unregister,
	localapi.OpJoin:            (*Server).join,
	localapi.OpAllReduce:       (*Server).allReduce,
	localapi.OpPartReady:       (*Server).partReady,
	localapi.OpAllReduceWait:   (*Server).allReduceWait,
	localapi.OpMembership:      (*Server).membership,
	localapi.OpStatus:          (*Server).status,
	localapi.OpLeave:           (*Server).leave,
	localapi.OpCheckpointSave:  (*Server).checkpointSave,
	localapi.OpCheckpointList:  (*Server).checkpointList,
	localapi.OpCheckpointFetch: (*Server).checkpointFetch,
	localapi.OpReform:          (*Server).reform,
	localapi.OpStateHash:       (*Server).stateHash,
}

func (s *Server) handle(ctx context.Context, c *conn, req *localapi.Request) localapi.Response {
	h, ok := handlers[req.Op]
	if !ok {
		return apiErr(localapi.CodeBadRequest, "unknown op %q", req.Op)
	}
	return h(s, ctx, c, req)
}

func apiErr(code, format string, args ...any) localapi.Response {
	return localapi.Response{Code: code, Error: fmt.Sprintf(format, args...)}
}

// maxBuffers bounds the buffers one connection may register.
const maxBuffers = 64

func (s *Server) hello(_ context.Context, _ *conn, req *localapi.Request) localapi.Response {
	if req.Version != localapi.Version {
		return apiErr(localapi.CodeUnsupportedVersion, "protocol version %d not supported; this node speaks %d", req.Version, localapi.Version)
	}
	m := s.b.Membership()
	return localapi.Response{Version: localapi.Version, Mesh: m.Mesh, Self: m.Self,
		State: m.State, Reason: m.Reason, NextStep: m.NextStep, MemberCount: len(m.Members)}
}

func (s *Server) membership(context.Context, *conn, *localapi.Request) localapi.Response {
	m := s.b.Membership()
	return localapi.Response{Self: m.Self, State: m.State, Reason: m.Reason, NextStep: m.NextStep,
		Members: m.Members, MemberCount: len(m.Members)}
}

func (s *Server) status(context.Context, *conn, *localapi.Request) localapi.Response {
	st := s.b.Status()
	s.mu.Lock()
	st.Training = s.training
	s.mu.Unlock()
	return localapi.Response{Status: &st}
}

func (s *Server) register(context.Context, *conn, *localapi.Request) localapi.Response {
	return apiErr(localapi.CodeBadRequest, "register by path is not supported: a file the node maps could be shrunk under it; "+
		"pass a sealed memfd with register_fd (the ringmesh clients do)")
}

func (s *Server) registerFD(_ context.Context, c *conn, req *localapi.Request) localapi.Response {
	fd, ok := -1, false
	if c.fds != nil {
		fd, ok = c.fds.TakeFD()
	}
	if !ok {
		return apiErr(localapi.CodeBadRequest, "register_fd: no file descriptor came with the request (send it with the frame, SCM_RIGHTS)")
	}
	m, err := localapi.MapFD(fd, req.Bytes)
	unix.Close(fd)
	if err != nil {
		return apiErr(localapi.CodeBadRequest, "%v", err)
	}
	if len(c.bufs) >= maxBuffers {
		m.Close()
		return apiErr(localapi.CodeBadRequest, "register_fd: %d buffers registered on this connection, the most allowed", maxBuffers)
	}
	c.nextID++
	c.bufs[c.nextID] = m
	return localapi.Response{Buffer: c.nextID}
}

func (s *Server) unregister(_ context.Context, c *conn, req *localapi.Request) localapi.Response {
	m, ok := c.bufs[req.Buffer]
	if !ok {
		return apiErr(localapi.CodeNotFound, "no buffer %d", req.Buffer)
	}
	if c.pending != nil && c.pendingBuf == req.Buffer {
		return apiErr(localapi.CodeBusy, "buffer %d holds the pending all-reduce of step %d: call allreduce_wait first", req.Buffer, c.pendingStep)
	}
	m.Close()
	delete(c.bufs, req.Buffer)
	return localapi.Response{}
}

func (s *Server) join(ctx context.Context, c *conn, req *localapi.Request) localapi.Response {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if req.TimeoutMS > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeout(ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
		defer stop()
	}
	if req.LocalRanks < 0 || req.LocalRanks > localapi.MaxLocalRanks {
		return apiErr(localapi.CodeBadRequest, "local_ranks %d: want 0..%d", req.LocalRanks, localapi.MaxLocalRanks)
	}
	if bad := s.attach(c); bad != nil {
		return *bad
	}
	s.b.SetLocalRanks(max(1, req.LocalRanks))
	return s.b.Join(ctx, Join{StartStep: req.StartStep, WantCheckpoint: req.WantCheckpoint, Resync: req.Resync, Dest: req.Dest})
}

func (s *Server) leave(_ context.Context, c *conn, _ *localapi.Request) localapi.Response {
	if bad := s.isTrainer(c); bad != nil {
		return *bad
	}
	s.detach(c)
	s.b.Leave("trainer left")
	return localapi.Response{}
}

func (s *Server) stateHash(_ context.Context, c *conn, req *localapi.Request) localapi.Response {
	if bad := s.isTrainer(c); bad != nil {
		return *bad
	}
	return s.b.StateHash(req.Step, req.Hash)
}

func (s *Server) checkpointSave(ctx context.Context, _ *conn, req *localapi.Request) localapi.Response {
	return s.b.CheckpointSave(ctx, req.Path, req.Step)
}

func (s *Server) checkpointList(_ context.Context, _ *conn, req *localapi.Request) localapi.Response {
	return s.b.CheckpointList(req.All)
}

func (s *Server) checkpointFetch(ctx context.Context, _ *conn, req *localapi.Request) localapi.Response {
	return s.b.CheckpointFetch(ctx, Fetch{Root: req.Root, Latest: req.Latest, Dest: req.Dest, FetchID: req.FetchID})
}

func (s *Server) reform(context.Context, *conn, *localapi.Request) localapi.Response {
	return s.b.Reform()
}

// attach makes c the node's trainer; it fails when another connection is.
func (s *Server) attach(c *conn) *localapi.Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.trainer != nil && s.trainer != c {
		r := apiErr(localapi.CodeBusy, "a trainer (pid %d) is attached to this node: one trainer per node", s.trainer.pid)
		return &r
	}
	s.trainer = c
	return nil
}

// isTrainer reports whether c is the attached trainer; otherwise it
// returns the error to answer.
func (s *Server) isTrainer(c *conn) *localapi.Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.trainer == c:
		return nil
	case s.trainer == nil:
		r := apiErr(localapi.CodeNotMember, "no trainer is attached: call join first")
		return &r
	}
	r := apiErr(localapi.CodeBusy, "a trainer (pid %d) is attached to this node: one trainer per node", s.trainer.pid)
	return &r
}

// detach: c is gone or left; it reports whether c was the trainer.
func (s *Server) detach(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.trainer != c {
		return false
	}
	s.trainer = nil
	s.b.SetLocalRanks(0)
	return true
}
