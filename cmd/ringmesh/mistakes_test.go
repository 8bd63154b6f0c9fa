package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/systest"
	"github.com/ringmesh/ringmesh/node/credentials"
)

// The operator mistakes of issue 25 item 8: each must say what is wrong,
// not hang or mislead.

// TestForeignJoinSaysSo: a node told to --join a member of another mesh
// (another secret) says so, naming the address, and keeps saying it at a
// bounded rate while it cannot join, instead of one line about "incoming
// message was too large" and then silence.
func TestForeignJoinSaysSo(t *testing.T) {
	a := startOwn(t, filepath.Join(t.TempDir(), "a"))
	c := startOwn(t, withSecret(t, filepath.Join(t.TempDir(), "c")), "--join", a.Addr, "--log-level", "info")
	want := a.Addr + " belongs to a mesh with another secret (or is not a ringmesh node): check the join token"
	var lines []string
	systest.Eventually(t, 45*time.Second, func() error {
		log, err := os.ReadFile(c.Log)
		if err != nil {
			return err
		}
		lines = nil
		for _, l := range strings.Split(string(log), "\n") {
			if strings.Contains(l, "level=WARN") && strings.Contains(l, want) {
				lines = append(lines, l)
			}
		}
		if len(lines) < 2 {
			return fmt.Errorf("%d warnings %q so far; want it again while the node cannot join", len(lines), want)
		}
		return nil
	})
	t.Logf("c: %s", lines[0])
	if ids := alivePeers(t, c); len(ids) > 0 {
		t.Fatalf("c sees members %v", ids)
	}
}

// TestJoinTypoLeavesNoSecret: a mistyped --join, or a member address on a
// fresh data dir (no token), is refused before the node writes a secret,
// so the right token then joins on the same data dir.
func TestJoinTypoLeavesNoSecret(t *testing.T) {
	a := startOwn(t, filepath.Join(t.TempDir(), "a"))
	tok, err := tokenFor(a.Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	plain, _, _ := strings.Cut(a.Addr, "/p2p/")
	dir := filepath.Join(t.TempDir(), "b")
	base := []string{"node", "--data-dir", dir, "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht"}
	for _, c := range []struct {
		join, want string
	}{
		{"/ip4/127.0.0.1/tcp/4x01", "is neither a join token nor a member address"},
		{"/ip4/127.0.0.1/udp/4001", "is neither a join token nor a member address"},
		{plain, "this data dir has no mesh secret yet"},
		{a.Addr, "this data dir has no mesh secret yet"},
	} {
		var out, errb bytes.Buffer
		code := run(append(slices.Clone(base), "--join", c.join), &out, &errb)
		t.Logf("--join %s: exit %d: %s", c.join, code, lastLine(errb.String()))
		if code != 2 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("--join %s: exit %d, %q; want 2 with %q", c.join, code, lastLine(errb.String()), c.want)
		}
		if _, err := os.Stat(filepath.Join(dir, credentials.SecretFile)); err == nil {
			t.Fatalf("--join %s left %s behind", c.join, credentials.SecretFile)
		}
	}
	b := startOwn(t, dir, "--join", tok.String())
	systest.Eventually(t, time.Minute, func() error {
		if !slices.Contains(alivePeers(t, a), b.ID) || !slices.Contains(alivePeers(t, b), a.ID) {
			return fmt.Errorf("a and b do not see each other alive yet")
		}
		return nil
	})
}

// TestSecondNodeOnDataDir: a second node on a data dir in use stops first
// thing, naming the running node's PID, without opening libp2p with its
// identity or bumping its incarnation.
func TestSecondNodeOnDataDir(t *testing.T) {
	a := startOwn(t, filepath.Join(t.TempDir(), "a"))
	inc, err := os.ReadFile(filepath.Join(a.Dir, "incarnation"))
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run([]string{"node", "--data-dir", a.Dir, "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht"}, &out, &errb)
	want := fmt.Sprintf("a node already runs on this data dir (%s, pid %d)", a.Dir, a.Cmd.Process.Pid)
	t.Logf("second node: exit %d: %s", code, strings.TrimSpace(errb.String()))
	if code != 1 || !strings.Contains(errb.String(), want) {
		t.Fatalf("second node on a's data dir: exit %d, %q; want 1 with %q", code, errb.String(), want)
	}
	if strings.Contains(errb.String(), "mesh open") {
		t.Fatalf("the second node opened its mesh: %s", errb.String())
	}
	if now, _ := os.ReadFile(filepath.Join(a.Dir, "incarnation")); !bytes.Equal(now, inc) {
		t.Fatalf("incarnation %q, was %q: the second node bumped it", now, inc)
	}
	if _, err := systest.Status(a.Dir); err != nil {
		t.Fatalf("a stopped answering: %v", err)
	}
}
