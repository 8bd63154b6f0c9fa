package netlab

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// nftTable is loaded into every host namespace: packets from an address in
// the set "cut" are dropped on input. Dropping on input only (not output)
// keeps a cut silent: senders see a lost packet, not EPERM.
const nftTable = `table inet netlab {
	set cut { type ipv4_addr; }
	chain input { type filter hook input priority 0; policy accept; ip saddr @cut drop; }
}
`

// nftLoad runs nft -f - with script inside a namespace.
func nftLoad(netns, script string) error {
	cmd := exec.Command("ip", "netns", "exec", netns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", netns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Cut stops all IP traffic between hosts i and j, both ways, including
// multicast; established connections stall as with a pulled cable. Other
// pairs are not affected. Cutting a cut pair is a no-op.
func (l *Lab) Cut(i, j int) {
	l.t.Helper()
	l.setCuts(map[[2]int]bool{l.pair(i, j): true}, false)
}

// Heal undoes Cut(i, j). Healing a pair that is not cut is a no-op.
func (l *Lab) Heal(i, j int) {
	l.t.Helper()
	l.setCuts(map[[2]int]bool{l.pair(i, j): false}, false)
}

// Partition cuts every pair of hosts that are in different groups, and every
// pair involving a host in no group (such a host is isolated). Pairs inside a
// group are healed. It replaces any earlier cuts.
func (l *Lab) Partition(groups ...[]int) {
	l.t.Helper()
	group := make([]int, len(l.hosts))
	for i := range group {
		group[i] = -1 - i // alone
	}
	for g, members := range groups {
		for _, i := range members {
			l.checkIndex(i)
			if group[i] >= 0 {
				l.t.Fatalf("netlab: host %d is in two groups", i)
			}
			group[i] = g
		}
	}
	want := map[[2]int]bool{}
	for i := range l.hosts {
		for j := i + 1; j < len(l.hosts); j++ {
			want[[2]int{i, j}] = group[i] != group[j]
		}
	}
	l.setCuts(want, true)
}

// HealAll removes every cut.
func (l *Lab) HealAll() {
	l.t.Helper()
	l.setCuts(map[[2]int]bool{}, true)
}

// Cuts returns the cut pairs (i<j), sorted.
func (l *Lab) Cuts() [][2]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out [][2]int
	for p, c := range l.cuts {
		if c {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b [2]int) int {
		if a[0] != b[0] {
			return a[0] - b[0]
		}
		return a[1] - b[1]
	})
	return out
}

func (l *Lab) pair(i, j int) [2]int {
	l.t.Helper()
	l.checkIndex(i)
	l.checkIndex(j)
	if i == j {
		l.t.Fatalf("netlab: cannot cut host %d from itself", i)
	}
	return [2]int{min(i, j), max(i, j)}
}

// setCuts applies changes (pair -> cut) to the cut state, or replaces it
// when replace is set, and rewrites the set of every host whose set changed.
func (l *Lab) setCuts(changes map[[2]int]bool, replace bool) {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.cuts
	next := map[[2]int]bool{}
	if !replace {
		for p, c := range old {
			next[p] = c
		}
	}
	for p, c := range changes {
		next[p] = c
	}
	for i := range l.hosts {
		before, after := l.peersCut(old, i), l.peersCut(next, i)
		if slices.Equal(before, after) {
			continue
		}
		if err := nftLoad(l.hosts[i].Netns, l.setScript(after)); err != nil {
			l.t.Fatalf("netlab: %v", err)
		}
	}
	l.cuts = next
}

// peersCut lists the hosts cut from host i, sorted.
func (l *Lab) peersCut(cuts map[[2]int]bool, i int) []int {
	var out []int
	for j := range l.hosts {
		if j != i && cuts[[2]int{min(i, j), max(i, j)}] {
			out = append(out, j)
		}
	}
	return out
}

// setScript replaces the cut set atomically (one nft transaction).
func (l *Lab) setScript(peers []int) string {
	var b strings.Builder
	b.WriteString("flush set inet netlab cut\n")
	if len(peers) > 0 {
		addrs := make([]string, len(peers))
		for k, j := range peers {
			addrs[k] = l.hosts[j].IP.String()
		}
		fmt.Fprintf(&b, "add element inet netlab cut { %s }\n", strings.Join(addrs, ", "))
	}
	return b.String()
}
