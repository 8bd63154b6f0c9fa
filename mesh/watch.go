package mesh

import (
	"context"
	"slices"
	"strings"
	"time"
)

// watcher is one Watch subscription: a 1-slot channel that always holds the
// latest undelivered view.
type watcher struct {
	ch   chan View
	stop func() bool // unregisters the context.AfterFunc
}

// Watch returns a channel that delivers the current view and then every
// changed view (state, incarnation, addresses, capabilities or payload of a
// member; LastSeen alone does not count). It is latest-view-wins: the
// channel holds one view, and a newer one replaces an unread one, so a slow
// reader never stalls failure detection. The channel is closed when ctx is
// done, when Run returns, or on Close.
func (m *Mesh) Watch(ctx context.Context) <-chan View {
	w := &watcher{ch: make(chan View, 1)}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.watchers == nil {
		close(w.ch)
		return w.ch
	}
	w.ch <- m.viewLocked(time.Now())
	m.watchers[w] = struct{}{}
	w.stop = context.AfterFunc(ctx, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if _, ok := m.watchers[w]; ok {
			delete(m.watchers, w)
			close(w.ch)
		}
	})
	return w.ch
}

// setMembers stores the table's members and, if changed, hands the new view
// to every watcher.
func (m *Mesh) setMembers(others []Member, changed bool) {
	slices.SortFunc(others, func(a, b Member) int { return strings.Compare(string(a.ID), string(b.ID)) })
	m.mu.Lock()
	defer m.mu.Unlock()
	m.others = others
	if !changed || len(m.watchers) == 0 {
		return
	}
	v := m.viewLocked(time.Now())
	for w := range m.watchers {
		select { // drop the unread view, if any; we are the only sender
		case <-w.ch:
		default:
		}
		w.ch <- v
	}
}

// closeWatchers closes every watcher channel; later Watch calls get a closed
// channel.
func (m *Mesh) closeWatchers() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for w := range m.watchers {
		w.stop()
		close(w.ch)
	}
	m.watchers = nil
}
