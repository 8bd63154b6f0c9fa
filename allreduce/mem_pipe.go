package allreduce

import (
	"io"
	"sync"
	"time"
)

// pipe is one direction of an in-memory stream: a bounded buffer with
// close, reset and deadlines.
type pipe struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every state change
	buf     []byte
	max     int
	eof     bool // writer closed
	rclosed bool // reader closed: further data is discarded
	isReset bool
}

func newPipe(max int) *pipe { return &pipe{max: max, changed: make(chan struct{})} }

func (p *pipe) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// waitFor blocks until the state changes or the deadline passes; p.mu is
// held on entry and exit.
func (p *pipe) waitFor(deadline time.Time) error {
	ch := p.changed
	p.mu.Unlock()
	defer p.mu.Lock()
	if deadline.IsZero() {
		<-ch
		return nil
	}
	d := time.Until(deadline)
	if d <= 0 {
		return errMemDeadline
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return errMemDeadline
	}
}

func (p *pipe) read(b []byte, deadline time.Time) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		switch {
		case p.isReset:
			return 0, ErrMemReset
		case p.rclosed:
			return 0, ErrMemReset
		case len(p.buf) > 0:
			n := copy(b, p.buf)
			p.buf = p.buf[n:]
			if len(p.buf) == 0 {
				p.buf = nil
			}
			p.notify()
			return n, nil
		case p.eof:
			return 0, io.EOF
		}
		if err := p.waitFor(deadline); err != nil {
			return 0, err
		}
	}
}

func (p *pipe) write(b []byte, deadline time.Time) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	written := 0
	for written < len(b) {
		switch {
		case p.isReset:
			return written, ErrMemReset
		case p.eof:
			return written, io.ErrClosedPipe
		case p.rclosed:
			return len(b), nil
		}
		room := p.max - len(p.buf)
		if room > 0 {
			k := min(room, len(b)-written)
			p.buf = append(p.buf, b[written:written+k]...)
			written += k
			p.notify()
			continue
		}
		if err := p.waitFor(deadline); err != nil {
			return written, err
		}
	}
	return written, nil
}

func (p *pipe) closeWrite() {
	p.mu.Lock()
	if !p.eof {
		p.eof = true
		p.notify()
	}
	p.mu.Unlock()
}

func (p *pipe) closeRead() {
	p.mu.Lock()
	if !p.rclosed {
		p.rclosed = true
		p.buf = nil
		p.notify()
	}
	p.mu.Unlock()
}

func (p *pipe) reset() {
	p.mu.Lock()
	if !p.isReset {
		p.isReset = true
		p.buf = nil
		p.notify()
	}
	p.mu.Unlock()
}

func (p *pipe) readClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rclosed || p.isReset
}

func (p *pipe) writeClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.eof || p.isReset
}
