package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	flag "github.com/spf13/pflag"

	"github.com/ringmesh/ringmesh/node"
	"github.com/ringmesh/ringmesh/node/client"
)

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	var asJSON *bool
	var watch *time.Duration
	dataDir, code := localCommand("status", "usage: ringmesh status --data-dir DIR [--json] [--watch[=INTERVAL]]\n\n"+
		"Shows the members the local node sees (and which of them are in the agreed\n"+
		"list), and its round state. --watch redraws it every INTERVAL (1s) until\n"+
		"interrupted; with --json it prints one object per line instead.", args, stderr,
		func(fs *flag.FlagSet) {
			asJSON = fs.Bool("json", false, "print one JSON object")
			watch = fs.Duration("watch", 0, "redraw every this long until interrupted (--watch alone: 1s)")
			fs.Lookup("watch").NoOptDefVal = "1s"
		})
	if code >= 0 {
		return code
	}
	ctx, stop := signalContext()
	defer stop()
	if *watch > 0 {
		watchStatus(ctx, dataDir, *watch, *asJSON, stdout)
		return 0
	}
	if err := showStatus(ctx, dataDir, *asJSON, stdout); err != nil {
		fmt.Fprintf(stderr, "ringmesh status: %v\n", err)
		return 1
	}
	return 0
}

// showStatus asks the node of dataDir for its status and writes it as a
// table, or as one JSON object.
func showStatus(ctx context.Context, dataDir string, asJSON bool, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := client.ReadStatus(ctx, dataDir)
	if err != nil {
		return err
	}
	if asJSON {
		out, _ := json.Marshal(st)
		_, err = fmt.Fprintln(w, string(out))
		return err
	}
	node.WriteStatus(w, st)
	return nil
}

// watchStatus redraws the status every interval until ctx ends (JSON: one
// object per line); a node that does not answer is shown as such and asked
// again.
func watchStatus(ctx context.Context, dataDir string, interval time.Duration, asJSON bool, stdout io.Writer) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		var b strings.Builder
		if err := showStatus(ctx, dataDir, asJSON, &b); err != nil {
			fmt.Fprintf(&b, "ringmesh status: %v\n", err)
		}
		if !asJSON {
			// Clear the screen and draw from the top.
			fmt.Fprintf(stdout, "\033[H\033[2J%s  (ringmesh status --watch; Ctrl-C ends)\n", time.Now().Format(time.TimeOnly))
		}
		io.WriteString(stdout, b.String())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
