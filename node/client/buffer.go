package client

import (
	"context"

	"golang.org/x/sys/unix"

	"github.com/ringmesh/ringmesh/node/localapi"
)

// Buffer is a float32 buffer in shared memory, registered with the node.
type Buffer struct {
	c  *Client
	m  *localapi.Mapping
	id uint64
	// Data is the buffer's memory; write gradients here, read results here.
	Data []float32
}

// NewBuffer creates and registers a shared buffer of n float32s.
func (c *Client) NewBuffer(ctx context.Context, n int) (*Buffer, error) {
	size := int64(n) * 4
	if size == 0 {
		size = 4
	}
	// An anonymous memfd sealed against shrinking: the node can map it
	// safely, and nothing is left in /dev/shm however this process ends.
	m, fd, err := localapi.CreateSealed(size)
	if err != nil {
		return nil, err
	}
	resp, err := c.callFD(ctx, localapi.Request{Op: localapi.OpRegisterFD, Bytes: size}, fd)
	unix.Close(fd)
	if err != nil {
		m.Close()
		return nil, err
	}
	data, _ := m.Float32s(0, int64(n))
	return &Buffer{c: c, m: m, id: resp.Buffer, Data: data}, nil
}

// Close unregisters the buffer and frees its memory.
func (b *Buffer) Close() error {
	_, err := b.c.call(context.Background(), localapi.Request{Op: localapi.OpUnregister, Buffer: b.id})
	b.m.Close()
	return err
}

// ReduceOptions selects the wire format and reduction of an all-reduce.
type ReduceOptions struct {
	Wire   string  // "float32" (default), "bfloat16", "float16", "int8", "float4"
	Reduce string  // "sum", "mean" (default), "wmean"
	Weight float64 // wmean: this member's weight
	// SyncEvery > 0: the round is a DiLoCo outer step over that many inner
	// steps (shown in the node's status).
	SyncEvery int
}

// AllReduce reduces the buffer in place across the mesh for the given step.
// The response names the members that took part, the total weight, how many
// attempts it took, and who joins at the next step.
func (b *Buffer) AllReduce(ctx context.Context, step uint64, opt ReduceOptions) (localapi.Response, error) {
	return b.c.call(ctx, localapi.Request{
		Op: localapi.OpAllReduce, Step: step, Buffer: b.id, Offset: 0, Count: int64(len(b.Data)),
		DType: "float32", Wire: opt.Wire, Reduce: opt.Reduce, Weight: opt.Weight, SyncEvery: opt.SyncEvery,
	})
}

// AllReduceParts submits the buffer for step in parts, each [offset,
// count] in elements, that tile it; it returns once the node took the
// call. The node reduces the parts in this order, each once PartReady
// marks it, so the trainer may still be computing the later ones; Wait
// returns the outcome. The buffer must not change until Wait returns,
// except for writing parts not marked ready yet.
func (b *Buffer) AllReduceParts(ctx context.Context, step uint64, opt ReduceOptions, parts [][2]int64) error {
	_, err := b.c.call(ctx, localapi.Request{
		Op: localapi.OpAllReduce, Step: step, Buffer: b.id, Offset: 0, Count: int64(len(b.Data)),
		DType: "float32", Wire: opt.Wire, Reduce: opt.Reduce, Weight: opt.Weight, SyncEvery: opt.SyncEvery, Parts: parts,
	})
	return err
}

// PartReady marks part i (an index into AllReduceParts' parts) of step's
// pending all-reduce ready.
func (b *Buffer) PartReady(ctx context.Context, step uint64, i int) error {
	_, err := b.c.call(ctx, localapi.Request{Op: localapi.OpPartReady, Step: step, Part: i})
	return err
}

// Wait waits for step's all-reduce in parts; it answers as AllReduce does.
func (b *Buffer) Wait(ctx context.Context, step uint64) (localapi.Response, error) {
	return b.c.call(ctx, localapi.Request{Op: localapi.OpAllReduceWait, Step: step})
}
