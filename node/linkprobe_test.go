package node_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/systest"
	"github.com/ringmesh/ringmesh/node"
)

// TestLinkProbeEstimates: two nodes probe each other once they meet, and
// each member's status shows both members' link estimates and shares
// (equal for a formed list) once their trainers joined.
func TestLinkProbeEstimates(t *testing.T) {
	a := startNode(t, t.TempDir(), 2)
	b := startNode(t, t.TempDir(), 2, a.addr())
	var wg sync.WaitGroup
	for _, n := range []*testNode{a, b} {
		c := dial(t, n.dir)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Join(ctxT(t, time.Minute), 0); err != nil {
				t.Errorf("join: %v", err)
			}
		}()
	}
	wg.Wait()
	systest.Eventually(t, time.Minute, func() error {
		for _, n := range []*testNode{a, b} {
			plan := n.Status().Rounds.Plan
			if len(plan) != 2 {
				return fmt.Errorf("plan %+v, want 2 members", plan)
			}
			for _, p := range plan {
				if p.EgressBps == 0 || p.IngressBps == 0 || p.Share != 0.5 {
					return fmt.Errorf("member %s: egress %d ingress %d share %v, want both measured and 0.5", p.ID, p.EgressBps, p.IngressBps, p.Share)
				}
			}
		}
		return nil
	})
}

// TestLinkProbeRefusesGarbage: a member that opens a probe with a bad
// header or a size above the cap is reset before anything is read, and the
// node goes on answering probes (a good one right after is timed).
func TestLinkProbeRefusesGarbage(t *testing.T) {
	a := startNode(t, t.TempDir(), 1)
	cfg := node.LocalConfig()
	cfg.DataDir, cfg.Mesh.Join, cfg.NoLinkProbe = t.TempDir(), []string{a.addr()}, true
	b := startNodeConfig(t, cfg)
	h, to := b.Mesh().Host(), a.Mesh().Host().ID()
	for _, hdr := range [][]byte{
		[]byte("XXXX\x00\x00\x10\x00"),
		binary.BigEndian.AppendUint32([]byte("RMLP"), 1<<30),
	} {
		systest.Eventually(t, time.Minute, func() error {
			s, err := h.NewStream(ctxT(t, 10*time.Second), to, node.LinkProbeProtocol)
			if err != nil {
				return err
			}
			defer s.Close()
			s.SetDeadline(time.Now().Add(10 * time.Second))
			s.Write(hdr)
			s.Write(make([]byte, 1<<16))
			s.CloseWrite()
			if n, err := io.ReadAll(s); err == nil || len(n) != 0 {
				return fmt.Errorf("header %q answered %x, %v; want a reset", hdr, n, err)
			}
			return nil
		})
	}
	s, err := h.NewStream(ctxT(t, 10*time.Second), to, node.LinkProbeProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(30 * time.Second))
	s.Write(binary.BigEndian.AppendUint32([]byte("RMLP"), 1<<20))
	s.Write(make([]byte, 1<<20))
	s.CloseWrite()
	ans, err := io.ReadAll(s)
	if err != nil || len(ans) != 16 {
		t.Fatalf("good probe after garbage: answer %x, %v", ans, err)
	}
	if bytes, nanos := binary.BigEndian.Uint64(ans), binary.BigEndian.Uint64(ans[8:]); bytes == 0 || bytes > 1<<20 || nanos == 0 {
		t.Errorf("probe of 1 MiB answered %d bytes in %d ns", bytes, nanos)
	}
}
