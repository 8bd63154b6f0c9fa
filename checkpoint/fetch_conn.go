package checkpoint

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// conn is one fetch stream to a provider, opened lazily and reused for
// sequential requests.
type conn struct {
	f    *Fetcher
	p    peer.ID
	slot bool // holds one of the Fetcher's slots for p (until close)
	s    network.Stream
	br   *bufio.Reader
	stop func() bool
	buf  []byte
}

func (c *conn) open(ctx context.Context) error {
	if c.s != nil {
		return nil
	}
	if !c.slot {
		if err := c.f.slots.acquire(ctx, c.p); err != nil {
			return err
		}
		c.slot = true
	}
	octx, cancel := context.WithTimeout(ctx, c.f.cfg.RequestTimeout)
	defer cancel()
	s, err := c.f.h.NewStream(octx, c.p, ProtocolID)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	c.s, c.br = s, bufio.NewReaderSize(s, 64<<10)
	c.stop = context.AfterFunc(ctx, func() { s.Reset() })
	return nil
}

// roundTrip sends req and reads one reply frame of at most maxLen bytes;
// an error reply is returned as *RemoteError.
func (c *conn) roundTrip(ctx context.Context, req []byte, maxLen int) (byte, []byte, error) {
	if err := c.open(ctx); err != nil {
		return 0, nil, err
	}
	c.s.SetDeadline(time.Now().Add(c.f.cfg.RequestTimeout))
	if _, err := c.s.Write(req); err != nil {
		return 0, nil, err
	}
	typ, body, err := readFrame(c.br, maxLen, c.buf)
	if err != nil {
		return 0, nil, err
	}
	c.buf = body[:cap(body)]
	if typ == frameRespError {
		return typ, nil, decodeError(body)
	}
	return typ, body, nil
}

// manifest requests root's encoded manifest (not yet verified).
func (c *conn) manifest(ctx context.Context, root Root) ([]byte, error) {
	typ, body, err := c.roundTrip(ctx, encodeRequest(root, -1), 1+MaxManifestLen)
	if err != nil {
		return nil, err
	}
	if typ != frameRespManifest {
		return nil, fmt.Errorf("%w: reply type %#x to a manifest request", ErrBadFrame, typ)
	}
	return append([]byte(nil), body...), nil
}

// chunk requests chunk i of want bytes (not yet verified). The returned
// slice is valid until the next request on c.
func (c *conn) chunk(ctx context.Context, root Root, i, want int) ([]byte, error) {
	typ, body, err := c.roundTrip(ctx, encodeRequest(root, i), 1+4+want)
	if err != nil {
		return nil, err
	}
	if typ != frameRespChunk || len(body) < 4 || binary.BigEndian.Uint32(body) != uint32(i) {
		return nil, fmt.Errorf("%w: reply type %#x of %d bytes to chunk request %d", ErrBadFrame, typ, len(body), i)
	}
	return body[4:], nil
}

// close ends the stream cleanly (CloseWrite, wait for the provider's EOF)
// and gives back the slot.
func (c *conn) close() {
	defer c.releaseSlot()
	if c.s == nil {
		return
	}
	defer c.reset()
	if c.s.CloseWrite() != nil {
		return
	}
	c.s.SetReadDeadline(time.Now().Add(c.f.cfg.RequestTimeout))
	if _, err := c.br.ReadByte(); err == io.EOF {
		c.s.Close()
	}
}

func (c *conn) releaseSlot() {
	if c.slot {
		c.slot = false
		c.f.slots.release(c.p)
	}
}

// reset aborts the stream (a no-op after close); the slot is kept.
func (c *conn) reset() {
	if c.s == nil {
		return
	}
	c.stop()
	c.s.Reset()
	c.s, c.br = nil, nil
}
