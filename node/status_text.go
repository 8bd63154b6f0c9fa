package node

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/internal/units"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// WriteStatus writes st for people, as `ringmesh status` shows it: the
// mesh, its privacy and addresses, the round state, and one line per member
// with its share, speed, local ranks and link estimate.
func WriteStatus(w io.Writer, st localapi.Status) {
	privacy := "private (peers need the mesh secret; 'ringmesh token' prints a join token)"
	if !st.Private {
		privacy = "OPEN (--insecure-open-mesh: any peer that reaches it can join)"
	}
	fmt.Fprintf(w, "mesh %s, %s, self %s\n", st.Mesh, privacy, st.Self.ID)
	for _, a := range st.Self.Addrs {
		fmt.Fprintf(w, "  %s\n", a)
	}
	if st.MetricsAddr != "" {
		fmt.Fprintf(w, "metrics: %s\n", MetricsURL(st.MetricsAddr))
	}
	l := st.Lanes
	fmt.Fprintf(w, "lanes: %s, %d direct, %d fallback, %d on streams, %d connections refused", laneMode(l.Mode), l.Direct, l.Fallback, l.Stream, l.Refused)
	if l.PortsExhausted > 0 {
		fmt.Fprintf(w, ", %d dials out of local ports (TIME_WAIT)", l.PortsExhausted)
	}
	fmt.Fprintln(w)
	r := st.Rounds
	fmt.Fprintf(w, "rounds: %s, next step %d, %d agreed members, %d applied, %d retries", r.State, r.NextStep, len(r.Members), r.Applied, r.Retries)
	if r.Reason != "" {
		fmt.Fprintf(w, " (%s)", r.Reason)
	}
	if len(r.WaitingFor) > 0 {
		short := make([]string, len(r.WaitingFor))
		for i, id := range r.WaitingFor {
			short[i] = ShortID(id)
		}
		fmt.Fprintf(w, "; step %d waits for the trainers of %s", r.NextStep, strings.Join(short, ", "))
	}
	fmt.Fprintln(w)
	if t := st.Training; t.Mode != "" {
		what := "a round every step"
		if t.Mode == "diloco" {
			what = fmt.Sprintf("DiLoCo, an outer step every %d inner steps", t.SyncEvery)
		}
		fmt.Fprintf(w, "training: %s, wire %s, last round step %d of %d members, %s on the wire, about %s sent\n",
			what, t.Wire, t.Step, t.Members, units.Format(t.WireBytes), units.Format(t.SentBytes))
	}
	fmt.Fprintln(w, stateCheckText(st.StateCheck))
	plan := map[string]localapi.PlanEntry{}
	for _, p := range r.Plan {
		plan[p.ID] = p
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tLIST\tSHARE\tSAMPLES/S\tRANKS\tLINK OUT/IN\tINC\tADDRS\tGPUS\tCPUS\tLAST SEEN")
	for _, m := range st.Members {
		inList := "-"
		if slices.Contains(r.Members, m.ID) {
			inList = "yes"
		}
		share, sps, ranks, link := "-", "-", "-", "-"
		if p, ok := plan[m.ID]; ok {
			share = fmt.Sprintf("%.3f", p.Share)
			if p.LocalRanks > 0 {
				ranks = fmt.Sprint(p.LocalRanks)
			}
			if p.SamplesPerSec > 0 {
				sps = fmt.Sprintf("%.1f", p.SamplesPerSec)
			}
			if p.EgressBps > 0 || p.IngressBps > 0 {
				link = units.Rate(p.EgressBps) + " / " + units.Rate(p.IngressBps)
			}
		} else if m.ID == st.Self.ID && (st.Self.EgressBps > 0 || st.Self.IngressBps > 0) {
			link = units.Rate(st.Self.EgressBps) + " / " + units.Rate(st.Self.IngressBps)
		}
		id := ShortID(m.ID)
		var gpus []string
		for _, g := range m.GPUs {
			gpus = append(gpus, fmt.Sprintf("%s (%dGiB)", g.Name, g.MemoryBytes>>30))
		}
		g := strings.Join(gpus, ", ")
		if g == "" {
			g = "-"
		}
		seen := "-"
		if !m.LastSeen.IsZero() {
			seen = time.Since(m.LastSeen).Truncate(100*time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\n", id, m.State, inList, share, sps, ranks, link, m.Incarnation, strings.Join(m.Addrs, " "), g, m.CPUs, seen)
	}
	tw.Flush()
}

// laneMode says what a LaneStats mode means.
func laneMode(mode string) string {
	switch mode {
	case allreduce.LaneModeTLS:
		return "direct TCP under TLS"
	case allreduce.LaneModePlaintext:
		return "direct TCP in PLAINTEXT (--trusted-network)"
	case allreduce.LaneModeOff:
		return "libp2p streams only (--no-direct-lanes)"
	}
	return mode
}

// MetricsURL is where a scraper finds the metrics served at addr ("off"
// for none).
func MetricsURL(addr string) string {
	if addr == "" {
		return "off"
	}
	return "http://" + addr + "/metrics"
}

// stateCheckText is the state check line of `ringmesh status`.
func stateCheckText(sc localapi.StateCheckStatus) string {
	counts := fmt.Sprintf("checks: %d agree, %d diverged, %d unchecked; re-syncs: %d", sc.Checks[stateAgree], sc.Checks[stateDiverged],
		sc.Checks[stateUnchecked], sc.Resyncs)
	l := sc.Last
	switch {
	case l == nil && sc.Reported == 0:
		return "state check: no state hash reported by the trainer yet"
	case l == nil:
		return fmt.Sprintf("state check: step %d reported, not compared yet", sc.Reported)
	case sc.Diverged && sc.Verdict != nil:
		l = sc.Verdict
		return fmt.Sprintf("state check: DIVERGED: the trainer's model state differs from the mesh's majority (last verdict, step %d: "+
			"%d of %d reporting members hold this state, hash %s, majority %s); the trainer must re-sync from the mesh (%s)",
			l.Step, l.Agree, l.Reporting, l.Hash, l.Majority, counts)
	case l.Reporting < 2:
		return fmt.Sprintf("state check: step %d: no other member reported a state hash for it (a single member, or another check_every) (%s)", l.Step, counts)
	}
	return fmt.Sprintf("state check: step %d: agrees, %d of %d members hold this state (hash %s) (%s)", l.Step, l.Agree, l.Reporting, l.Hash, counts)
}
