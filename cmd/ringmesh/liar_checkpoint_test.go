package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/checkpoint"
	"github.com/ringmesh/ringmesh/internal/systest"
	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// TestJoinIgnoresForgedCheckpoints is the poisoned-checkpoint test of the
// security issue on real processes: while one node trains, a member with
// the mesh secret (a Mesh in the test process, which is not in the agreed
// list) announces, in the mesh's own run, a checkpoint at step 2^64-1 and
// 300 at the next steps claiming 1 TiB each, and more at steps the mesh
// has applied. A second node's trainer then joins asking for state: it gets
// the checkpoint the training member saved for its entry step, byte for
// byte; no node lists a forged checkpoint as one that counts or starts
// replicating one; and the joiner's data dir holds nothing near the sizes
// claimed (nothing was preallocated).
func TestJoinIgnoresForgedCheckpoints(t *testing.T) {
	root := t.TempDir()
	dumpLogsOnFailure(t, root)
	ps := systest.Cluster(t, root, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	startSaving(t, ctx, ps[0].Dir)
	var st0 = func() (s struct {
		epoch, applied uint64
		mesh           string
	}) {
		systest.Eventually(t, time.Minute, func() error {
			st, err := systest.Status(ps[0].Dir)
			if err == nil && st.Rounds.Applied < 2 {
				err = fmt.Errorf("member applied %d rounds", st.Rounds.Applied)
			}
			s.epoch, s.applied, s.mesh = st.Rounds.Epoch, st.Rounds.Applied, st.Mesh
			return err
		})
		return s
	}()

	// The liar: a member of the mesh (it has the secret), not of the
	// agreed list.
	liar, _, _ := systest.Member(t, ctx, root, st0.mesh, ps[0].Addr)
	topic, err := liar.PubSub().Join(liar.TopicName("checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, time.Minute, func() error {
		for _, p := range ps {
			if !slices.ContainsFunc(topic.ListPeers(), func(id peer.ID) bool { return id.String() == p.ID }) {
				return fmt.Errorf("%s is not the liar's checkpoint topic peer yet", filepath.Base(p.Dir))
			}
		}
		return nil
	})
	run := fmt.Sprintf("%s/e%d", st0.mesh, st0.epoch)
	var forged []string
	announce := func(step uint64, size int64) {
		a := checkpoint.Announcement{Step: step, Size: size, Provider: liar.Self(), RunID: run}
		rand.Read(a.Root[:])
		b, err := a.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := topic.Publish(ctx, b); err != nil {
			t.Fatal(err)
		}
		forged = append(forged, a.Root.String())
		time.Sleep(time.Millisecond) // gossipsub drops what overflows a peer's queue
	}
	for i := range uint64(300) {
		announce(st0.applied+1+i, checkpoint.MaxCheckpointSize)
	}
	// Steps the mesh has applied, in its run: only the author gives these
	// away.
	for step := uint64(1); step <= min(st0.applied, 4); step++ {
		announce(step, 4096)
		announce(step, checkpoint.MaxCheckpointSize)
	}
	announce(math.MaxUint64, 4096)
	// Let the announcements reach both nodes' catalogs (which keep a few
	// per author, the latest to arrive).
	systest.Eventually(t, time.Minute, func() error {
		for _, p := range ps {
			resp, err := listCheckpoints(ctx, p.Dir, true)
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(resp, func(c localapi.CheckpointInfo) bool { return c.Step == math.MaxUint64 }) {
				announce(math.MaxUint64, 4096)
				return fmt.Errorf("%s has not heard the forged announcements yet", filepath.Base(p.Dir))
			}
		}
		return nil
	})

	c, err := client.Dial(ctx, ps[1].Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, got := joinWithState(t, ctx, c)
	if slices.Contains(forged, resp.Checkpoint.Root) {
		t.Fatalf("the joiner got the forged checkpoint %s", resp.Checkpoint.Root)
	}
	for _, p := range ps {
		counted, err := listCheckpoints(ctx, p.Dir, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range counted {
			if slices.Contains(forged, k.Root) {
				t.Errorf("%s counts the forged checkpoint at step %d (%d bytes)", filepath.Base(p.Dir), k.Step, k.Size)
			}
		}
	}
	for _, p := range ps {
		log, _ := os.ReadFile(p.Log)
		for _, line := range bytes.Split(log, []byte("\n")) {
			if bytes.Contains(line, []byte("replicating checkpoint")) && slices.ContainsFunc(forged, func(r string) bool { return bytes.Contains(line, []byte(r)) }) {
				t.Errorf("%s replicates a forged checkpoint: %s", filepath.Base(p.Dir), line)
			}
		}
	}
	var used int64
	filepath.Walk(ps[1].Dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			used += fi.Size()
		}
		return nil
	})
	if used > 64<<20 {
		t.Errorf("the joiner's data dir holds %d bytes; the real checkpoint is %d", used, len(got))
	}
}

func listCheckpoints(ctx context.Context, dir string, all bool) ([]localapi.CheckpointInfo, error) {
	c, err := client.Dial(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	resp, err := c.Call(ctx, localapi.Request{Op: localapi.OpCheckpointList, All: all})
	return resp.Checkpoints, err
}
