package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/systest"
	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// TestReformAfterMajorityLost: 3 nodes train; 2 of them are SIGKILLed and
// their data dirs deleted (gone for good). The survivor says it waits, not
// in the majority, and names ringmesh reform; it applies nothing. Two new
// nodes cannot be admitted by it. `ringmesh reform` without --yes changes
// nothing; with --yes the survivor and the newcomers form a new epoch at a
// step no lower than the survivor's, and train; every applied step agrees
// and is the exact sum of its ring.
func TestReformAfterMajorityLost(t *testing.T) {
	root := t.TempDir()
	dumpLogsOnFailure(t, root)
	ps := systest.Cluster(t, root, 3, "--min-members", "3")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tctx, stop := context.WithCancel(ctx)
	tr := &trainers{t: t, ctx: tctx, led: newLedger(), size: 1000, steps: 1 << 40, exact: true, killed: map[string]bool{}}
	runs := make([]string, 3)
	for i, p := range ps {
		runs[i] = tr.start(p)
	}
	tr.waitRound("start", 3)
	// A checkpoint on the survivor: the state the re-formed mesh starts from.
	ckpt := filepath.Join(t.TempDir(), "state.ckpt")
	if err := os.WriteFile(ckpt, bytes.Repeat([]byte("state"), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx, ps[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Call(ctx, localapi.Request{Op: localapi.OpCheckpointSave, Path: ckpt, Step: 1}); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		tr.mu.Lock()
		tr.killed[runs[i]] = true
		tr.mu.Unlock()
		ps[i].Kill()
		if err := os.RemoveAll(ps[i].Dir); err != nil {
			t.Fatal(err)
		}
	}
	lost := time.Now()
	survivor := ps[0]
	var before struct{ epoch, step uint64 }
	systest.Eventually(t, time.Minute, func() error {
		st, err := systest.Status(survivor.Dir)
		if err != nil {
			return err
		}
		r := st.Rounds
		if r.State != "waiting" || !strings.Contains(r.Reason, "ringmesh reform") {
			return fmt.Errorf("survivor: %s (%s); want waiting, naming ringmesh reform", r.State, r.Reason)
		}
		before.epoch, before.step = r.Epoch, r.NextStep
		return nil
	})
	var newcomers []*systest.Proc
	for i := range 2 {
		p := systest.Start(t, fmt.Sprintf("%s/new%d", root, i), "--min-members", "3", "--join", survivor.Addr)
		newcomers = append(newcomers, p)
		tr.start(p)
	}
	time.Sleep(3 * time.Second) // long enough to be admitted, were that possible
	var out, errb bytes.Buffer
	if code := run([]string{"reform", "--data-dir", survivor.Dir}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--yes") {
		t.Fatalf("reform without --yes: exit %d, %q; want 2 asking for --yes", code, errb.String())
	}
	reformed := time.Now()
	if n := tr.led.appliedBetween(runs[0], lost.Add(2*time.Second), reformed); n != 0 {
		t.Errorf("the survivor applied %d steps with the majority of its list gone", n)
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"reform", "--data-dir", survivor.Dir, "--yes"}, &out, &errb); code != 0 {
		t.Fatalf("reform --yes: exit %d: %s", code, errb.String())
	}
	t.Logf("reform: %s", strings.TrimSpace(out.String()))
	if !strings.Contains(out.String(), "load the checkpoint of step 1") {
		t.Errorf("reform did not start from the survivor's checkpoint of step 1: %s", out.String())
	}
	tr.waitRound("after the reform", 3)
	st, err := systest.Status(survivor.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rounds.Epoch <= before.epoch {
		t.Errorf("after the reform: epoch %d, want above %d", st.Rounds.Epoch, before.epoch)
	}
	stop()
	tr.wg.Wait()
	tr.led.mu.Lock()
	for run, as := range tr.led.runs {
		for _, a := range as {
			if a.At.After(reformed) && a.Step < before.step {
				t.Errorf("%s applied step %d after the reform; the survivor was at step %d", run, a.Step, before.step)
			}
		}
	}
	tr.led.mu.Unlock()
	steps := tr.led.check(t)
	t.Logf("epoch %d -> %d; survivor was at step %d; %d steps applied; newcomers %s, %s", before.epoch, st.Rounds.Epoch, before.step, steps, newcomers[0].ID, newcomers[1].ID)
}

// TestStatusWatch: status --watch redraws the table until it is stopped,
// marks the members of the agreed list, and keeps going (saying so) while
// the node does not answer.
func TestStatusWatch(t *testing.T) {
	ps := systest.Cluster(t, t.TempDir(), 2, "--min-members", "2")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	joinedTrainers(t, ctx, ps, 16)
	wctx, stop := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer stop()
	var out bytes.Buffer
	watchStatus(wctx, ps[0].Dir, 200*time.Millisecond, false, &out)
	s := out.String()
	if n := strings.Count(s, "ringmesh status --watch"); n < 3 {
		t.Fatalf("%d redraws in 1.5s at 200ms", n)
	}
	last := s[strings.LastIndex(s, "ringmesh status --watch"):]
	if !strings.Contains(last, "LIST") || strings.Count(last, " yes ") < 1 {
		t.Fatalf("the last redraw marks no member of the agreed list:\n%s", last)
	}
	out.Reset()
	gone, stop2 := context.WithTimeout(ctx, 500*time.Millisecond)
	defer stop2()
	watchStatus(gone, t.TempDir(), 100*time.Millisecond, false, &out)
	if !strings.Contains(out.String(), "no ringmesh node") {
		t.Fatalf("watching a data dir without a node: %q", out.String())
	}
}
