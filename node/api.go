package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/node/localapi"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// apiServer serves the local trainer API on DATA_DIR/ringmesh.sock.
type apiServer struct {
	n     *Node
	ln    net.Listener
	path  string
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// trainer is the connection that joined: one trainer per node, so a
	// second process cannot take over or disturb the first one's rounds.
	trainer *apiConn
	wg      sync.WaitGroup
}

// listenAPI binds the control socket. A socket file left by a node that is
// gone is replaced; one that answers means another node owns the data dir.
func listenAPI(n *Node, dataDir string) (*apiServer, error) {
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
	return &apiServer{n: n, ln: ln, path: path, conns: map[net.Conn]struct{}{}}, nil
}

func (s *apiServer) serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
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
			s.serveConn(c)
		}()
	}
}

func (s *apiServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	os.Remove(s.path)
}

// conn is the state of one client connection.
type apiConn struct {
	bufs   map[uint64]*localapi.Mapping
	nextID uint64
	pid    int32 // the client's process (SO_PEERCRED); 0 when unknown
	fds    *localapi.FDConn
	// pending is the all-reduce in parts submitted on this connection and
	// not waited for yet; pendingBuf its buffer (not to be unregistered).
	pending    *submit
	pendingBuf uint64
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

// attach makes st the node's trainer; it fails when another connection is.
func (s *apiServer) attach(st *apiConn) *localapi.Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.trainer != nil && s.trainer != st {
		r := apiErr(localapi.CodeBusy, "a trainer (pid %d) is attached to this node: one trainer per node", s.trainer.pid)
		return &r
	}
	s.trainer = st
	return nil
}

// isTrainer reports whether st is the attached trainer; otherwise it
// returns the error to answer.
func (s *apiServer) isTrainer(st *apiConn) *localapi.Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.trainer == st:
		return nil
	case s.trainer == nil:
		r := apiErr(localapi.CodeNotMember, "no trainer is attached: call join first")
		return &r
	}
	r := apiErr(localapi.CodeBusy, "a trainer (pid %d) is attached to this node: one trainer per node", s.trainer.pid)
	return &r
}

// detach: st is gone or left; it reports whether st was the trainer.
func (s *apiServer) detach(st *apiConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.trainer != st {
		return false
	}
	s.trainer = nil
	s.n.localRanks.Store(0)
	return true
}

func (s *apiServer) serveConn(nc net.Conn) {
	st := &apiConn{bufs: map[uint64]*localapi.Mapping{}, pid: peerPID(nc)}
	var c net.Conn = nc
	if uc, ok := nc.(*net.UnixConn); ok {
		st.fds = localapi.NewFDConn(uc)
		c = st.fds
	}
	defer func() {
		if p := recover(); p != nil {
			// A request this node failed to handle ends its connection,
			// not the node.
			s.n.log.Error("api request panicked; connection closed", "pid", st.pid, "panic", p, "stack", string(debug.Stack()))
		}
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		// The trainer's round is stopped before its buffers are unmapped:
		// an all-reduce in parts runs while no request of it does.
		if s.detach(st) {
			s.n.leave("trainer disconnected")
		}
		for _, m := range st.bufs {
			m.Close()
		}
	}()
	for {
		var req localapi.Request
		if err := localapi.ReadFrame(c, &req); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.n.log.Warn("bad api request", "err", err)
				localapi.WriteFrame(c, localapi.Response{Code: localapi.CodeBadRequest, Error: err.Error()})
			}
			return
		}
		resp := s.handle(st, &req)
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

// maxBuffers bounds the buffers one connection may register.
const maxBuffers = 64

// maxWeight bounds a weighted mean's weight: a sample count, exact in a
// float64 and summable over many members without overflow.
const maxWeight float64 = 1 << 53

func apiErr(code, format string, args ...any) localapi.Response {
	return localapi.Response{Code: code, Error: fmt.Sprintf(format, args...)}
}

func fromErr(err error) localapi.Response {
	var re *roundError
	switch {
	case errors.As(err, &re):
		return localapi.Response{Code: re.Code, Error: re.Msg, NextStep: re.NextStep}
	case errors.Is(err, context.Canceled):
		return apiErr(localapi.CodeShuttingDown, "node shutting down")
	}
	return apiErr(localapi.CodeInternal, "%v", err)
}

func (s *apiServer) handle(st *apiConn, req *localapi.Request) localapi.Response {
	n := s.n
	switch req.Op {
	case localapi.OpHello:
		if req.Version != localapi.Version {
			return apiErr(localapi.CodeUnsupportedVersion, "protocol version %d not supported; this node speaks %d", req.Version, localapi.Version)
		}
		sn := n.drv.snap.Load()
		return localapi.Response{Version: localapi.Version, Mesh: n.cfg.Mesh.Mesh, Self: n.host.ID().String(),
			State: sn.state, Reason: sn.reason, NextStep: sn.step, MemberCount: len(sn.list)}
	case localapi.OpRegister:
		return apiErr(localapi.CodeBadRequest, "register by path is not supported: a file the node maps could be shrunk under it; "+
			"pass a sealed memfd with register_fd (the ringmesh clients do)")
	case localapi.OpRegisterFD:
		fd, ok := -1, false
		if st.fds != nil {
			fd, ok = st.fds.TakeFD()
		}
		if !ok {
			return apiErr(localapi.CodeBadRequest, "register_fd: no file descriptor came with the request (send it with the frame, SCM_RIGHTS)")
		}
		m, err := localapi.MapFD(fd, req.Bytes)
		unix.Close(fd)
		if err != nil {
			return apiErr(localapi.CodeBadRequest, "%v", err)
		}
		if len(st.bufs) >= maxBuffers {
			m.Close()
			return apiErr(localapi.CodeBadRequest, "register_fd: %d buffers registered on this connection, the most allowed", maxBuffers)
		}
		st.nextID++
		st.bufs[st.nextID] = m
		return localapi.Response{Buffer: st.nextID}
	case localapi.OpUnregister:
		m, ok := st.bufs[req.Buffer]
		if !ok {
			return apiErr(localapi.CodeNotFound, "no buffer %d", req.Buffer)
		}
		if st.pending != nil && st.pendingBuf == req.Buffer {
			return apiErr(localapi.CodeBusy, "buffer %d holds the pending all-reduce of step %d: call allreduce_wait first", req.Buffer, st.pending.step)
		}
		m.Close()
		delete(st.bufs, req.Buffer)
		return localapi.Response{}
	case localapi.OpJoin:
		return s.join(st, req)
	case localapi.OpAllReduce:
		return s.allReduce(st, req)
	case localapi.OpPartReady:
		sub := st.pending
		if sub == nil || sub.step != req.Step {
			return apiErr(localapi.CodeNotFound, "part_ready: no all-reduce in parts of step %d pending on this connection", req.Step)
		}
		if err := n.partReady(sub, req.Part); err != nil {
			return apiErr(localapi.CodeBadRequest, "part_ready: %v", err)
		}
		return localapi.Response{}
	case localapi.OpAllReduceWait:
		sub := st.pending
		if sub == nil || sub.step != req.Step {
			return apiErr(localapi.CodeNotFound, "allreduce_wait: no all-reduce in parts of step %d pending on this connection", req.Step)
		}
		st.pending = nil
		return s.reduced(sub.wait())
	case localapi.OpMembership:
		sn := n.drv.snap.Load()
		return localapi.Response{Self: n.host.ID().String(), State: sn.state, Reason: sn.reason, NextStep: sn.step,
			Members: idStrings(sn.list), MemberCount: len(sn.list)}
	case localapi.OpStatus:
		st := n.Status()
		return localapi.Response{Status: &st}
	case localapi.OpLeave:
		if bad := s.isTrainer(st); bad != nil {
			return *bad
		}
		s.detach(st)
		n.leave("trainer left")
		return localapi.Response{}
	case localapi.OpCheckpointSave:
		return n.ckpt.save(n.runCtx, req)
	case localapi.OpCheckpointList:
		return n.ckpt.list(req.All)
	case localapi.OpCheckpointFetch:
		return n.ckpt.fetch(n.runCtx, req)
	case localapi.OpReform:
		return n.reform()
	case localapi.OpStateHash:
		if bad := s.isTrainer(st); bad != nil {
			return *bad
		}
		if !validStateHash(req.Hash, localapi.MinStateHash, localapi.MaxStateHash) {
			return apiErr(localapi.CodeBadRequest, "state_hash: hash must be %d to %d lowercase hex characters", localapi.MinStateHash, localapi.MaxStateHash)
		}
		sn := n.drv.snap.Load()
		sc := n.check.report(sn.epoch, req.Step, req.Hash[:stateHashLen], time.Now(), n.mesh.View(), sn.list)
		return localapi.Response{Step: req.Step, StateCheck: sc}
	}
	return apiErr(localapi.CodeBadRequest, "unknown op %q", req.Op)
}

// maxLocalRanks bounds a join's LocalRanks (processes on one host).
const maxLocalRanks = 1024

func (s *apiServer) join(st *apiConn, req *localapi.Request) localapi.Response {
	ctx, cancel := context.WithCancel(s.n.runCtx)
	if req.TimeoutMS > 0 {
		ctx, cancel = context.WithTimeout(s.n.runCtx, time.Duration(req.TimeoutMS)*time.Millisecond)
	}
	defer cancel()
	if req.LocalRanks < 0 || req.LocalRanks > maxLocalRanks {
		return apiErr(localapi.CodeBadRequest, "local_ranks %d: want 0..%d", req.LocalRanks, maxLocalRanks)
	}
	if bad := s.attach(st); bad != nil {
		return *bad
	}
	s.n.localRanks.Store(int32(max(1, req.LocalRanks)))
	if req.Resync {
		s.n.check.resync()
	}
	a, err := s.n.join(ctx, req.StartStep, req.WantCheckpoint, req.Resync)
	if err != nil {
		return fromErr(err)
	}
	resp := localapi.Response{Step: a.Step, NextStep: a.Step, Members: idStrings(a.List), MemberCount: len(a.List),
		Share: shareOf(a.List, a.Shares, s.n.host.ID()), RunID: runID(s.n.cfg.Mesh.Mesh, a.Epoch)}
	if a.Formed {
		resp.Formed = s.n.newMesh(a)
	}
	if req.WantCheckpoint {
		start := req.StartStep
		if a.Formed {
			start = a.Step // the trainer's own state is the entry step's
		}
		hist := history{list: a.List, step: a.Step, epoch: a.Epoch, run: runID(s.n.cfg.Mesh.Mesh, a.Epoch)}
		cr := s.n.ckpt.joinState(ctx, a.Step, start, hist, req.Dest)
		if cr.Code != "" {
			return cr
		}
		resp.Checkpoint, resp.Fetch = cr.Checkpoint, cr.Fetch
	}
	return resp
}

// newMesh reports whether the trainer admitted with a keeps its own state
// in a mesh that has decided no step yet: its list was formed at a.Step (a
// formation now, or one this node restarted in before the first decision),
// so every member's trainer starts from the state it brought. a.Formed
// alone also admits a trainer into its node's running list at the trainer's
// step (it joined again, or is one step behind): not a new mesh.
func (n *Node) newMesh(a rounds.Admitted) bool {
	var fresh bool
	n.drv.call(func() {
		d := n.drv.m.Durable()
		fresh = d.Last == nil && d.Epoch == a.Epoch && d.Step == a.Step
	})
	return fresh
}

func (s *apiServer) allReduce(st *apiConn, req *localapi.Request) localapi.Response {
	m, ok := st.bufs[req.Buffer]
	if !ok {
		return apiErr(localapi.CodeBadRequest, "no buffer %d registered on this connection", req.Buffer)
	}
	if req.DType != "" && req.DType != "float32" {
		return apiErr(localapi.CodeBadRequest, "dtype %q: buffers are float32", req.DType)
	}
	data, err := m.Float32s(req.Offset, req.Count)
	if err != nil {
		return apiErr(localapi.CodeBadRequest, "%v", err)
	}
	opt := allreduce.Options{Wire: allreduce.Float32, Op: allreduce.Mean, Weight: req.Weight}
	if req.Wire != "" {
		if opt.Wire, err = allreduce.ParseDType(req.Wire); err != nil {
			return apiErr(localapi.CodeBadRequest, "%v", err)
		}
	}
	if req.Reduce != "" {
		if opt.Op, err = allreduce.ParseOp(req.Reduce); err != nil {
			return apiErr(localapi.CodeBadRequest, "%v", err)
		}
	}
	if opt.Op == allreduce.WeightedMean && !(req.Weight >= 0 && req.Weight <= maxWeight) {
		return apiErr(localapi.CodeBadRequest, "weight %v must be a number in [0, %g] (a sample count)", req.Weight, maxWeight)
	}
	if bad := s.isTrainer(st); bad != nil {
		return *bad
	}
	if st.pending != nil {
		return apiErr(localapi.CodeBusy, "the all-reduce in parts of step %d is pending on this connection: call allreduce_wait first", st.pending.step)
	}
	if len(req.Parts) == 0 {
		return s.reduced(s.n.allReduce(req.Step, data, opt))
	}
	parts, err := checkParts(req.Parts, len(data))
	if err != nil {
		return apiErr(localapi.CodeBadRequest, "%v", err)
	}
	sub, err := s.n.submitReduce(req.Step, data, opt, parts)
	if err != nil {
		return fromErr(err)
	}
	st.pending, st.pendingBuf = sub, req.Buffer
	return localapi.Response{Pending: true, Step: req.Step}
}

// checkParts checks that parts tile a buffer of n elements.
func checkParts(in [][2]int64, n int) ([]Part, error) {
	if len(in) > localapi.MaxParts {
		return nil, fmt.Errorf("parts: %d, at most %d", len(in), localapi.MaxParts)
	}
	parts := make([]Part, len(in))
	for i, p := range in {
		if p[0] < 0 || p[1] < 1 || p[0] > int64(n) || p[1] > int64(n)-p[0] {
			return nil, fmt.Errorf("part %d [%d, +%d] is not a non-empty range of the %d elements", i, p[0], p[1], n)
		}
		parts[i] = Part{int(p[0]), int(p[1])}
	}
	sorted := slices.Clone(parts)
	slices.SortFunc(sorted, func(a, b Part) int { return a.Off - b.Off })
	next := 0
	for _, p := range sorted {
		if p.Off != next {
			return nil, fmt.Errorf("parts must tile the %d elements: element %d is in none or two", n, min(p.Off, next))
		}
		next = p.Off + p.N
	}
	if next != n {
		return nil, fmt.Errorf("parts must tile the %d elements: they end at %d", n, next)
	}
	return parts, nil
}

// reduced answers an all-reduce with its outcome.
func (s *apiServer) reduced(res roundResult, err error) localapi.Response {
	if err != nil {
		return fromErr(err)
	}
	resp := localapi.Response{Step: res.step, NextStep: res.step + 1, Members: idStrings(res.ring),
		MemberCount: len(res.ring), TotalWeight: res.weight, Attempts: res.attempts, Share: res.share}
	for _, id := range res.next {
		if !slices.Contains(res.ring, id) {
			resp.Joiners = append(resp.Joiners, id.String())
		}
	}
	resp.SaveCheckpoint = len(resp.Joiners) > 0 && res.ring[0] == s.n.host.ID()
	resp.StateCheck = s.n.check.pending()
	return resp
}
