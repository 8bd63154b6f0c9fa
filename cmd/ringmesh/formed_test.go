package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/systest"
	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// TestJoinSaysFormed: the trainers of a mesh formed anew are told formed
// (each keeps its own state, and they share the run ID); a trainer that
// joins again while its node is still a member of the running list, at
// the list's step, keeps its state too but is not in a new mesh: formed is
// false there.
func TestJoinSaysFormed(t *testing.T) {
	root := t.TempDir()
	dumpLogsOnFailure(t, root)
	ps := systest.Cluster(t, root, 2, "--min-members", "2")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	cs := make([]*client.Client, 2)
	for i, p := range ps {
		c, err := client.Dial(ctx, p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { c.Close() }()
		cs[i] = c
	}
	joins := make([]localapi.Response, 2)
	errs := make(chan error, 2)
	for i, c := range cs {
		go func() {
			var err error
			joins[i], err = c.JoinWait(ctx, 0, nil)
			errs <- err
		}()
	}
	for range cs {
		if err := <-errs; err != nil {
			t.Fatalf("join: %v", err)
		}
	}
	for i, r := range joins {
		if !r.Formed || r.Step != 0 || r.MemberCount != 2 || r.RunID == "" || r.RunID != joins[0].RunID {
			t.Fatalf("trainer %d joined a new mesh with step %d, %d members, formed %v, run %q (trainer 0: run %q); "+
				"want step 0, 2 members, formed, one run", i, r.Step, r.MemberCount, r.Formed, r.RunID, joins[0].RunID)
		}
	}
	// Step 0 on both: the mesh runs.
	for i, c := range cs {
		go func() {
			buf, err := c.NewBuffer(ctx, 64)
			if err == nil {
				var r localapi.Response
				r, err = buf.AllReduce(ctx, 0, client.ReduceOptions{Reduce: "mean"})
				if err == nil && r.NextStep != 1 {
					err = fmt.Errorf("trainer %d: step 0 answered next step %d", i, r.NextStep)
				}
			}
			errs <- err
		}()
	}
	for range cs {
		if err := <-errs; err != nil {
			t.Fatalf("step 0: %v", err)
		}
	}
	// Trainer 1 goes away and a new one joins at step 1: its node is still
	// a member of the list, which decided step 0.
	cs[1].Close()
	c, err := client.Dial(ctx, ps[1].Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.JoinWait(ctx, 1, nil)
	if err != nil {
		t.Fatalf("join again: %v", err)
	}
	if r.Formed || r.Step != 1 || r.RunID != joins[0].RunID {
		t.Fatalf("join again = step %d, formed %v, run %q; want step 1 of run %q, not formed", r.Step, r.Formed, r.RunID,
			joins[0].RunID)
	}
}
