package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/ringmesh/ringmesh/node/localapi"
)

// Rejoinable reports whether err is an answer that joining again fixes:
// the node is not in the majority (waiting), the mesh went on without it
// (excluded), or it is not a member (never joined, or left). Every trainer
// loop uses this one policy; see PROTOCOL.md for the codes.
func Rejoinable(err error) bool {
	var ae *APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.Code {
	case localapi.CodeWaiting, localapi.CodeExcluded, localapi.CodeNotMember:
		return true
	}
	return false
}

// CheckpointSave stores the file at path (absolute) as the checkpoint of
// step in the node's store and announces it. Response.Checkpoint describes
// it.
func (c *Client) CheckpointSave(ctx context.Context, path string, step uint64) (localapi.Response, error) {
	return c.call(ctx, localapi.Request{Op: localapi.OpCheckpointSave, Path: path, Step: step})
}

// CheckpointList lists the checkpoints that count (all: every one known,
// of any run and announcer) and the fetches in progress.
func (c *Client) CheckpointList(ctx context.Context, all bool) (localapi.Response, error) {
	return c.call(ctx, localapi.Request{Op: localapi.OpCheckpointList, All: all})
}

// Fetch names what CheckpointFetch gets and where it writes it.
type Fetch struct {
	Root    string // the checkpoint's root hash; or
	Latest  bool   // the newest checkpoint that counts
	Dest    string // absolute path of the file to write
	FetchID string // optional: tags the fetch in CheckpointList's Fetches
}

// CheckpointFetch fetches a checkpoint from every provider (or takes the
// local copy) and writes it to f.Dest; Response.Fetch says what it did.
func (c *Client) CheckpointFetch(ctx context.Context, f Fetch) (localapi.Response, error) {
	return c.call(ctx, localapi.Request{Op: localapi.OpCheckpointFetch, Root: f.Root, Latest: f.Latest, Dest: f.Dest, FetchID: f.FetchID})
}

// CheckpointFetchProgress is CheckpointFetch that also calls progress with
// the fetch's progress about every interval while it runs, from a second
// connection to the node (this one waits for the fetch's answer). progress
// runs on another goroutine, never after CheckpointFetchProgress returns.
func (c *Client) CheckpointFetchProgress(ctx context.Context, f Fetch, interval time.Duration, progress func(localapi.FetchProgress)) (localapi.Response, error) {
	if f.FetchID == "" {
		var b [8]byte
		rand.Read(b[:])
		f.FetchID = hex.EncodeToString(b[:])
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchFetch(wctx, c.dir, f.FetchID, interval, progress)
	}()
	resp, err := c.CheckpointFetch(ctx, f)
	stop()
	<-done
	return resp, err
}

// watchFetch polls the node of dataDir for the fetch tagged id until ctx
// ends or the node stops answering.
func watchFetch(ctx context.Context, dataDir, id string, interval time.Duration, progress func(localapi.FetchProgress)) {
	c, err := Dial(ctx, dataDir)
	if err != nil {
		return
	}
	defer c.Close()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		resp, err := c.CheckpointList(ctx, false)
		if err != nil {
			return
		}
		for _, p := range resp.Fetches {
			if p.FetchID == id {
				progress(p)
			}
		}
	}
}

// Status returns the node's status (what `ringmesh status --json`
// prints).
func (c *Client) Status(ctx context.Context) (localapi.Status, error) {
	resp, err := c.call(ctx, localapi.Request{Op: localapi.OpStatus})
	if err != nil {
		return localapi.Status{}, err
	}
	if resp.Status == nil {
		return localapi.Status{}, fmt.Errorf("client: %s: the node answered without a status", localapi.OpStatus)
	}
	return *resp.Status, nil
}

// ReadStatus asks the node whose data dir is dataDir for its status on a
// connection of its own (what `ringmesh status` shows).
func ReadStatus(ctx context.Context, dataDir string) (localapi.Status, error) {
	c, err := Dial(ctx, dataDir)
	if err != nil {
		return localapi.Status{}, err
	}
	defer c.Close()
	return c.Status(ctx)
}
