package main

import (
	"context"
	"fmt"
	"io"
	"time"

	flag "github.com/spf13/pflag"

	"github.com/ringmesh/ringmesh/node/client"
)

const reformHelp = `usage: ringmesh reform --data-dir DIR --yes

Re-forms the mesh as a new epoch when a majority of its last agreed list is
gone for good (hosts lost with their disks, not just down or cut off).

A mesh only trains while a strict majority of its agreed list is reachable,
so that two sides of a split can never both train. When that majority is
gone, 'ringmesh status' on the survivors says

  waiting: not in the majority: 1 of 3 members of the last agreed list reachable

and the mesh waits for them without end: a member that comes back (it keeps
its place on disk) lets it go on where it stopped. If they will never come
back, run this on a surviving node (and on each other node that says it is
waiting): the node leaves its list and forms a new mesh, in a newer epoch,
with the nodes that are forming (--min-members of them), at a step no lower
than any it has applied or seen. Its state is the newest checkpoint the node
knows of: trainers that join at the new mesh's first step load it; when no
checkpoint is known, each trainer keeps the state it has.

This is never done automatically: steps the lost members may still hold
are given up. The old epoch's steps keep their results; the new epoch's
steps are new pairs (epoch, step), so none names two results.`

func cmdReform(args []string, stdout, stderr io.Writer) int {
	var yes *bool
	dataDir, code := localCommand("reform", reformHelp, args, stderr,
		func(fs *flag.FlagSet) {
			yes = fs.Bool("yes", false, "confirm: the majority of the list is gone for good")
		})
	if code >= 0 {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh reform: %v\n", err)
		return 1
	}
	defer c.Close()
	if !*yes {
		st, _ := c.Membership(ctx)
		fmt.Fprintf(stderr, "ringmesh reform: the node is %s (%s), next step %d.\n"+
			"Re-forming gives up what the missing members of its list hold; run again with --yes if they are gone for good.\n",
			st.State, st.Reason, st.NextStep)
		return 2
	}
	resp, err := c.Reform(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh reform: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n", resp.Reason)
	return 0
}
