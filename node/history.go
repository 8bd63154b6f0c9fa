package node

import (
	"fmt"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/checkpoint"
)

// history is what the agreed history says about checkpoints: who may
// provide them (the members of the agreed list), up to which step (the
// step the mesh decides next), and the run they belong to.
//
// The rule (PROTOCOL.md, "Which checkpoints count"): for a member, a
// checkpoint counts only when it is held here, or announced by a member of
// the agreed list at a step the mesh has reached, under the run ID of the
// current epoch. A joiner applies it with the list and epoch its admission
// named. Anything else is listed only by checkpoint_list with all, and
// never fetched for a join, a resume or replication. A node outside any
// list (no trainer ever joined here) has no history to check against: it
// takes what the mesh's credentialed peers announce, of any run.
type history struct {
	list  []peer.ID
	step  uint64
	epoch uint64
	run   string
	open  bool // no agreed list
}

// runID names the run of a mesh epoch: every formation (and re-formation)
// of the mesh starts a new one.
func runID(mesh string, epoch uint64) string {
	if len(mesh) > 40 {
		mesh = mesh[:40]
	}
	return fmt.Sprintf("%s/e%d", mesh, epoch)
}

// currentHistory reads the node's agreed state.
func (n *Node) currentHistory() history {
	sn := n.drv.Snapshot()
	if len(sn.List) == 0 {
		return history{epoch: sn.Epoch, run: runID(n.cfg.Mesh.Mesh, sn.Epoch), open: true}
	}
	return history{list: sn.List, step: sn.Step, epoch: sn.Epoch, run: runID(n.cfg.Mesh.Mesh, sn.Epoch)}
}

// trustAuthor: an announcement by author at step fits the history.
func (h history) trustAuthor(author peer.ID, step uint64) bool {
	return h.open || (step <= h.step && slices.Contains(h.list, author))
}

// filter returns k with only the providers the history trusts, and
// whether it fits the history at all: its run, a step the mesh reached,
// and announced first by a member of the list or provided by one now.
func (h history) filter(k checkpoint.Known) (checkpoint.Known, bool) {
	switch {
	case h.open || k.Local:
		return k, true
	case k.RunID != h.run || k.Step > h.step:
		return k, false
	}
	k.Providers = slices.DeleteFunc(slices.Clone(k.Providers), func(p peer.ID) bool { return !slices.Contains(h.list, p) })
	return k, len(k.Providers) > 0 || slices.Contains(h.list, k.Author)
}

// counted lists the checkpoints that fit the history, newest step first
// (the catalog's order), with their trusted providers.
func (c *checkpoints) counted(h history) []checkpoint.Known {
	var out []checkpoint.Known
	for _, k := range c.catalog.List() {
		if f, ok := h.filter(k); ok {
			out = append(out, f)
		}
	}
	return out
}

// trusted is counted without the checkpoints nobody trusted can provide.
func (c *checkpoints) trusted(h history) []checkpoint.Known {
	return slices.DeleteFunc(c.counted(h), func(k checkpoint.Known) bool { return !k.Local && len(k.Providers) == 0 })
}
