package node

import (
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/checkpoint"
)

// TestHistoryFilter is the rule of which checkpoints count, as a joiner
// applies it with its admission's list and epoch: only providers in the
// list, only the epoch's run, no step beyond the mesh's; local ones always;
// a node outside any list takes what credentialed peers announce.
func TestHistoryFilter(t *testing.T) {
	member, outsider := peer.ID("member"), peer.ID("outsider")
	h := history{list: []peer.ID{member, "joiner"}, step: 40, epoch: 3, run: runID("lab", 3)}
	for _, c := range []struct {
		name      string
		k         checkpoint.Known
		ok        bool
		providers []peer.ID
	}{
		{"a member's, at the entry step", checkpoint.Known{Step: 40, RunID: "lab/e3", Providers: []peer.ID{member, outsider}}, true, []peer.ID{member}},
		{"only an outsider provides a member's", checkpoint.Known{Step: 40, RunID: "lab/e3", Author: member, Providers: []peer.ID{outsider}}, true, nil},
		{"an outsider's, only it provides", checkpoint.Known{Step: 40, RunID: "lab/e3", Author: outsider, Providers: []peer.ID{outsider}}, false, nil},
		{"an outsider's, a member replicated it", checkpoint.Known{Step: 40, RunID: "lab/e3", Author: outsider, Providers: []peer.ID{member}}, true, []peer.ID{member}},
		{"beyond the mesh's step", checkpoint.Known{Step: 1<<64 - 1, RunID: "lab/e3", Providers: []peer.ID{member}}, false, nil},
		{"another run", checkpoint.Known{Step: 40, RunID: "lab/e2", Providers: []peer.ID{member}}, false, nil},
		{"no run (older nodes)", checkpoint.Known{Step: 40, Providers: []peer.ID{member}}, false, nil},
		{"held here", checkpoint.Known{Step: 1<<64 - 1, RunID: "other", Local: true}, true, nil},
	} {
		got, ok := h.filter(c.k)
		if ok != c.ok || (ok && !c.k.Local && !slices.Equal(got.Providers, c.providers)) {
			t.Errorf("%s: ok %v providers %v; want ok %v providers %v", c.name, ok, got.Providers, c.ok, c.providers)
		}
	}
	if !h.trustAuthor(member, 40) || h.trustAuthor(member, 41) || h.trustAuthor(outsider, 1) {
		t.Error("trustAuthor: want the list's members at steps the mesh reached, nobody else")
	}
	open := history{open: true, run: runID("lab", 0)}
	if _, ok := open.filter(checkpoint.Known{Step: 9, RunID: "lab/e7", Providers: []peer.ID{outsider}}); !ok || !open.trustAuthor(outsider, 1<<60) {
		t.Error("a node outside any list refuses a credentialed peer's checkpoint")
	}
}
