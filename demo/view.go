package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ringmesh/ringmesh/node"
)

// demoView shows progress: a table redrawn in place when out is a
// terminal, plain lines (every 10th step per node, and events) otherwise.
type demoView struct {
	d     *Demo
	out   io.Writer
	tty   bool
	drawn int // lines of the table on screen
	shown int // events printed
}

func newDemoView(d *Demo, out io.Writer) *demoView {
	v := &demoView{d: d, out: out}
	if f, ok := out.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb" {
			v.tty = true
		}
	}
	return v
}

func (v *demoView) run(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			v.draw()
			return
		case <-t.C:
			v.draw()
		}
	}
}

func (v *demoView) draw() {
	d := v.d
	d.mu.Lock()
	events := d.events[v.shown:]
	v.shown = len(d.events)
	lines := d.lines
	d.lines = nil
	var table []string
	if v.tty {
		table = v.tableLocked()
	}
	d.mu.Unlock()
	var b strings.Builder
	if v.tty && v.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", v.drawn) // back to the table's first line
	}
	clear := ""
	if v.tty {
		clear = "\x1b[2K"
	}
	for _, e := range events {
		b.WriteString(clear + e + "\n")
	}
	if !v.tty {
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
	}
	for _, l := range table {
		b.WriteString(clear + l + "\n")
	}
	if v.tty {
		b.WriteString("\x1b[J") // clear whatever was below
	}
	v.drawn = len(table)
	io.WriteString(v.out, b.String())
}

func (v *demoView) tableLocked() []string {
	d := v.d
	var loss float32
	for _, n := range d.nodes {
		if n.applied > 0 && n.step+1 == d.maxStep {
			loss = n.loss
		}
	}
	rows := []string{
		fmt.Sprintf("step %d/%d  loss %.4f  %.1fs", d.maxStep, d.cfg.Steps, loss, time.Since(d.start).Seconds()),
		fmt.Sprintf("  %-6s %-20s %-10s %6s %9s %9s %7s %10s", "node", "peer", "state", "step", "loss", "shard", "members", "samples/s"),
	}
	for _, n := range d.nodes {
		step, loss, local, members, sps := "-", "-", "-", "-", "-"
		if n.applied > 0 {
			step = itoa(n.step)
			loss = fmt.Sprintf("%.4f", n.loss)
			local = fmt.Sprintf("%.4f", n.localLoss)
			members = strconv.Itoa(n.members)
			sps = fmt.Sprintf("%.0f", n.sps)
		}
		state := n.state
		if n.applied > 0 && !n.synced {
			state += "*"
		}
		rows = append(rows, fmt.Sprintf("  %-6s %-20s %-10s %6s %9s %9s %7s %10s", n.name, node.ShortID(n.id), state, step, loss, local, members, sps))
	}
	return rows
}

// progressLine is the plain line of one node's step.
func progressLine(n *demoNode) string {
	return fmt.Sprintf("step %4d  %-6s loss %.4f (shard %.4f)  members %d  %6.0f samples/s", n.step, n.name, n.loss, n.localLoss, n.members, n.sps)
}

func itoa(u uint64) string { return strconv.FormatUint(u, 10) }
