// Package client is the Go client of a node's local trainer API
// (PROTOCOL.md). A trainer dials its node's socket in the data dir, joins the
// mesh, and all-reduces float32 buffers that live in shared memory.
//
// A Client is safe for concurrent use; calls are sent one at a time.
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringmesh/ringmesh/node/localapi"
)

// ErrNoNode is returned by Dial when no node answers on the data dir's socket.
var ErrNoNode = errors.New("client: no ringmesh node")

// APIError is an error answered by the node.
type APIError struct {
	Op   string
	Code string
	Msg  string
	// NextStep is the step the mesh expects (code step_mismatch).
	NextStep uint64
}

func (e *APIError) Error() string {
	return fmt.Sprintf("ringmesh %s: %s (%s)", e.Op, e.Msg, e.Code)
}

// IsCode reports whether err is an APIError with the given code.
func IsCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// Client is a connection to the local node.
type Client struct {
	dir    string // the node's data dir
	conn   net.Conn
	mu     sync.Mutex
	nextID atomic.Uint64
	Hello  localapi.Response // the node's answer to hello
}

// Dial connects to the node whose data dir is dataDir and says hello.
func Dial(ctx context.Context, dataDir string) (*Client, error) {
	sock := filepath.Join(dataDir, localapi.SocketName)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		if _, serr := os.Stat(sock); serr != nil {
			return nil, fmt.Errorf("%w in %s (no socket %s): is `ringmesh node --data-dir %s` running?", ErrNoNode, dataDir, sock, dataDir)
		}
		return nil, fmt.Errorf("%w in %s (stale socket %s: %v): is `ringmesh node --data-dir %s` running?", ErrNoNode, dataDir, sock, err, dataDir)
	}
	c := &Client{dir: dataDir, conn: conn}
	name := filepath.Base(os.Args[0])
	resp, err := c.call(ctx, localapi.Request{Op: localapi.OpHello, Version: localapi.Version, Client: name})
	if err != nil {
		conn.Close()
		return nil, err
	}
	c.Hello = resp
	return c, nil
}

// Close closes the connection. A node whose trainer disconnects stops
// offering it for rounds.
func (c *Client) Close() error { return c.conn.Close() }

// Call sends one request and waits for its response. ctx bounds the wait;
// cancelling it closes the connection (the node then treats the trainer as
// gone), since a half-read frame cannot be resumed.
func (c *Client) Call(ctx context.Context, req localapi.Request) (localapi.Response, error) {
	return c.call(ctx, req)
}

func (c *Client) call(ctx context.Context, req localapi.Request) (localapi.Response, error) {
	return c.callFD(ctx, req, -1)
}

// callFD is call with the file descriptor fd sent along with the request
// (none when fd < 0).
func (c *Client) callFD(ctx context.Context, req localapi.Request, fd int) (localapi.Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	req.ID = c.nextID.Add(1)
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var err error
	if uc, ok := c.conn.(*net.UnixConn); ok && fd >= 0 {
		err = localapi.WriteFrameFD(uc, req, fd)
	} else {
		err = localapi.WriteFrame(c.conn, req)
	}
	if err != nil {
		return localapi.Response{}, c.connErr(ctx, req.Op, err)
	}
	var resp localapi.Response
	if err := localapi.ReadFrame(c.conn, &resp); err != nil {
		return localapi.Response{}, c.connErr(ctx, req.Op, err)
	}
	if resp.ID != req.ID {
		c.conn.Close()
		return localapi.Response{}, fmt.Errorf("client: %s: response id %d for request %d", req.Op, resp.ID, req.ID)
	}
	if !resp.OK {
		return resp, &APIError{Op: req.Op, Code: resp.Code, Msg: resp.Error, NextStep: resp.NextStep}
	}
	return resp, nil
}

func (c *Client) connErr(ctx context.Context, op string, err error) error {
	c.conn.Close()
	if ctx.Err() != nil {
		return fmt.Errorf("client: %s: %w", op, ctx.Err())
	}
	return fmt.Errorf("client: %s: connection to node lost (node stopped or restarted?): %w", op, err)
}

// Join waits until this node is a training member and returns the entry
// step (and the checkpoint to load, when the mesh has one). startStep is the
// step to begin from if this node forms a new mesh.
func (c *Client) Join(ctx context.Context, startStep uint64) (localapi.Response, error) {
	req := localapi.Request{Op: localapi.OpJoin, StartStep: startStep}
	if dl, ok := ctx.Deadline(); ok {
		// Leave the node time to answer "timeout" before ctx ends.
		req.TimeoutMS = max(time.Until(dl).Milliseconds()*9/10-200, 1)
	}
	return c.call(ctx, req)
}

// JoinWait is Join until admitted: it asks again, in 5 s slices, while the
// node answers timeout (no mesh has admitted it yet), calling onWait (if
// not nil) with each such answer, until ctx ends. Any other error ends it.
func (c *Client) JoinWait(ctx context.Context, startStep uint64, onWait func(error)) (localapi.Response, error) {
	for {
		jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := c.Join(jctx, startStep)
		cancel()
		if err == nil || !IsCode(err, localapi.CodeTimeout) || ctx.Err() != nil {
			return resp, err
		}
		if onWait != nil {
			onWait(err)
		}
	}
}

// Reform asks the node to re-form the mesh as a new epoch from the newest
// checkpoint it knows of, because a majority of its agreed list is gone for
// good (see ringmesh reform --help). Response.Step is the new mesh's first
// step, Response.Checkpoint its state (nil when none is known).
func (c *Client) Reform(ctx context.Context) (localapi.Response, error) {
	return c.call(ctx, localapi.Request{Op: localapi.OpReform})
}

// Membership returns the node's state and the agreed member list.
func (c *Client) Membership(ctx context.Context) (localapi.Response, error) {
	return c.call(ctx, localapi.Request{Op: localapi.OpMembership})
}

// Leave tells the node this trainer stops; the mesh goes on without it.
func (c *Client) Leave(ctx context.Context) error {
	_, err := c.call(ctx, localapi.Request{Op: localapi.OpLeave})
	return err
}
