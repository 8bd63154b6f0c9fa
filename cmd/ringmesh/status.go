package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	flag "github.com/spf13/pflag"

	"github.com/ringmesh/ringmesh/internal/units"
	"github.com/ringmesh/ringmesh/node"
)

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	var asJSON *bool
	var watch *time.Duration
	dataDir, code := localCommand("status", "usage: ringmesh status --data-dir DIR [--json] [--watch[=INTERVAL]]\n\n"+
		"Shows the members the local node sees (and which of them are in the agreed\n"+
		"list), and its round state. --watch redraws it every INTERVAL (1s) until\n"+
		"interrupted.", args, stderr,
		func(fs *flag.FlagSet) {
			asJSON = fs.Bool("json", false, "print one JSON object")
			watch = fs.Duration("watch", 0, "redraw every this long until interrupted (--watch alone: 1s)")
			fs.Lookup("watch").NoOptDefVal = "1s"
		})
	if code >= 0 {
		return code
	}
	if *watch > 0 {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		watchStatus(ctx, dataDir, *watch, stdout)
		return 0
	}
	st, err := fetchStatus(dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh status: %v\n", err)
		return 1
	}
	if *asJSON {
		b, _ := json.Marshal(st)
		fmt.Fprintln(stdout, string(b))
		return 0
	}
	printStatus(stdout, st)
	return 0
}

func fetchStatus(dataDir string) (node.StatusJSON, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return node.ReadStatus(ctx, dataDir)
}

// watchStatus redraws the status every interval until ctx ends; a node
// that does not answer is shown as such and asked again.
func watchStatus(ctx context.Context, dataDir string, interval time.Duration, stdout io.Writer) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		var b strings.Builder
		if st, err := fetchStatus(dataDir); err != nil {
			fmt.Fprintf(&b, "ringmesh status: %v\n", err)
		} else {
			printStatus(&b, st)
		}
		// Clear the screen and draw from the top.
		fmt.Fprintf(stdout, "\033[H\033[2J%s%s\n", time.Now().Format(time.TimeOnly), "  (ringmesh status --watch; Ctrl-C ends)")
		io.WriteString(stdout, b.String())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func printStatus(w io.Writer, st node.StatusJSON) {
	privacy := "private (peers need the mesh secret; 'ringmesh token' prints a join token)"
	if !st.Private {
		privacy = "OPEN (--insecure-open-mesh: any peer that reaches it can join)"
	}
	fmt.Fprintf(w, "mesh %s, %s, self %s\n", st.Mesh, privacy, st.Self.ID)
	for _, a := range st.Self.Addrs {
		fmt.Fprintf(w, "  %s\n", a)
	}
	if st.MetricsAddr != "" {
		fmt.Fprintf(w, "metrics: %s\n", metricsURL(st.MetricsAddr))
	}
	r := st.Rounds
	fmt.Fprintf(w, "rounds: %s, next step %d, %d agreed members, %d applied, %d retries", r.State, r.NextStep, len(r.Members), r.Applied, r.Retries)
	if r.Reason != "" {
		fmt.Fprintf(w, " (%s)", r.Reason)
	}
	fmt.Fprintln(w)
	plan := map[string]node.PlanJSON{}
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
		id := node.ShortID(m.ID)
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
