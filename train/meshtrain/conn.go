package meshtrain

import (
	"context"
	"fmt"
	"time"

	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// conn is what the loop needs of its node: the local API calls it makes.
// clientConn is the real one; the tests use a fake.
type conn interface {
	// Self is the node's peer ID.
	Self() string
	// Join joins; with dest set it asks for the checkpoint of the entry
	// step, written to dest.
	Join(ctx context.Context, startStep uint64, dest string) (localapi.Response, error)
	// AllReduce reduces data in place for step.
	AllReduce(ctx context.Context, step uint64, data []float32, opt client.ReduceOptions) (localapi.Response, error)
	Membership(ctx context.Context) (localapi.Response, error)
	SaveCheckpoint(ctx context.Context, path string, step uint64) error
	Leave(ctx context.Context) error
	Close() error
}

// clientConn is a conn over node/client with one shared buffer.
type clientConn struct {
	c   *client.Client
	buf *client.Buffer
}

var _ conn = (*clientConn)(nil)

// dial connects to the node of dataDir and registers a buffer of n floats.
func dial(ctx context.Context, dataDir string, n int) (*clientConn, error) {
	c, err := client.Dial(ctx, dataDir)
	if err != nil {
		return nil, err
	}
	buf, err := c.NewBuffer(ctx, n)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("register buffer: %w", err)
	}
	return &clientConn{c: c, buf: buf}, nil
}

func (cc *clientConn) Self() string { return cc.c.Hello.Self }

func (cc *clientConn) Join(ctx context.Context, startStep uint64, dest string) (localapi.Response, error) {
	return cc.c.Call(ctx, joinRequest(ctx, startStep, dest))
}

// joinRequest is client.Join's request, asking for the checkpoint of the
// entry step when dest is set.
func joinRequest(ctx context.Context, startStep uint64, dest string) localapi.Request {
	req := localapi.Request{Op: localapi.OpJoin, StartStep: startStep, WantCheckpoint: dest != "", Dest: dest}
	if dl, ok := ctx.Deadline(); ok {
		// Leave the node time to answer "timeout" before ctx ends.
		req.TimeoutMS = max(time.Until(dl).Milliseconds()*9/10-200, 1)
	}
	return req
}

func (cc *clientConn) AllReduce(ctx context.Context, step uint64, data []float32, opt client.ReduceOptions) (localapi.Response, error) {
	copy(cc.buf.Data, data)
	resp, err := cc.buf.AllReduce(ctx, step, opt)
	if err == nil {
		copy(data, cc.buf.Data)
	}
	return resp, err
}

func (cc *clientConn) Membership(ctx context.Context) (localapi.Response, error) {
	return cc.c.Membership(ctx)
}

func (cc *clientConn) SaveCheckpoint(ctx context.Context, path string, step uint64) error {
	_, err := cc.c.CheckpointSave(ctx, path, step)
	return err
}

func (cc *clientConn) Leave(ctx context.Context) error { return cc.c.Leave(ctx) }

func (cc *clientConn) Close() error {
	cc.buf.Close()
	return cc.c.Close()
}
