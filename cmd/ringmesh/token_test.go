package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/systest"
	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/credentials"
	"github.com/ringmesh/ringmesh/node/localapi"
)

func startOwn(t *testing.T, dir string, args ...string) *systest.Proc {
	t.Helper()
	p, err := systest.StartOwn(nil, systest.Binary(t), dir, append(append([]string{}, systest.LocalArgs...), args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	return p
}

// withSecret makes dir a data dir that holds a mesh secret of its own (of
// an earlier mesh): a fresh one is refused a --join without a token.
func withSecret(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := credentials.Ensure(dir, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

func alivePeers(t *testing.T, p *systest.Proc) []string {
	t.Helper()
	st, err := systest.Status(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range st.Members {
		if m.ID != st.Self.ID && m.State == "alive" {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// TestTokenJoinAndOutsiders is the credentials test of the security issue,
// on the default path: a fresh data dir creates a private mesh; its token is
// all another host needs to join; a node with a secret of its own, told
// the member's address, never connects: it sees no member, no heartbeat and
// no checkpoint, and the members never see it.
func TestTokenJoinAndOutsiders(t *testing.T) {
	a := startOwn(t, filepath.Join(t.TempDir(), "a"))
	st, err := systest.Status(a.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Private || st.SecretFile != filepath.Join(a.Dir, credentials.SecretFile) {
		t.Fatalf("a fresh node: private %v, secret %q; want private with %s in its data dir", st.Private, st.SecretFile, credentials.SecretFile)
	}
	if fi, err := os.Stat(st.SecretFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v, %v; want mode 0600", fi, err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"token", "--data-dir", a.Dir}, &out, &errb); code != 0 {
		t.Fatalf("ringmesh token: exit %d: %s", code, errb.String())
	}
	token := strings.TrimSpace(out.String())
	b := startOwn(t, filepath.Join(t.TempDir(), "b"), "--join", token)
	systest.Eventually(t, time.Minute, func() error {
		if !slices.Contains(alivePeers(t, a), b.ID) || !slices.Contains(alivePeers(t, b), a.ID) {
			return fmt.Errorf("a and b do not see each other alive yet")
		}
		return nil
	})
	sa, _ := credentials.ReadSecret(filepath.Join(a.Dir, credentials.SecretFile))
	sb, err := credentials.ReadSecret(filepath.Join(b.Dir, credentials.SecretFile))
	if err != nil || !bytes.Equal(sa, sb) {
		t.Fatalf("b's secret (%v) is not a's", err)
	}

	// A checkpoint on a; an outsider must not learn of it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ca, err := client.Dial(ctx, a.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	src := filepath.Join(t.TempDir(), "state.ckpt")
	os.WriteFile(src, bytes.Repeat([]byte("model"), 2000), 0o600)
	if _, err := ca.Call(ctx, localapi.Request{Op: localapi.OpCheckpointSave, Path: src, Step: 5}); err != nil {
		t.Fatal(err)
	}

	outsider := startOwn(t, withSecret(t, filepath.Join(t.TempDir(), "c")), "--join", a.Addr)
	// Long enough for many dial attempts and heartbeats.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if ids := alivePeers(t, outsider); len(ids) > 0 {
			t.Fatalf("the outsider sees members %v", ids)
		}
		if slices.Contains(alivePeers(t, a), outsider.ID) || slices.Contains(alivePeers(t, b), outsider.ID) {
			t.Fatalf("a member sees the outsider")
		}
		time.Sleep(250 * time.Millisecond)
	}
	co, err := client.Dial(ctx, outsider.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	if resp, err := co.Call(ctx, localapi.Request{Op: localapi.OpCheckpointList}); err != nil || len(resp.Checkpoints) != 0 {
		t.Fatalf("the outsider's checkpoint list: %+v, %v; want empty", resp.Checkpoints, err)
	}
	if _, err := co.Call(ctx, localapi.Request{Op: localapi.OpCheckpointFetch, Latest: true, Dest: filepath.Join(t.TempDir(), "got")}); err == nil {
		t.Fatal("the outsider fetched the latest checkpoint")
	}
	// The member's list still holds the checkpoint (the check above is not
	// vacuous).
	if resp, err := ca.Call(ctx, localapi.Request{Op: localapi.OpCheckpointList}); err != nil || len(resp.Checkpoints) == 0 {
		t.Fatalf("a's checkpoint list: %+v, %v", resp.Checkpoints, err)
	}
}

// TestTokenMisuse: a data dir of one mesh refuses another mesh's token,
// and --insecure-open-mesh does not combine with credentials; each says why
// and starts nothing.
func TestTokenMisuse(t *testing.T) {
	a := startOwn(t, filepath.Join(t.TempDir(), "a"))
	tokA, err := tokenFor(a.Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other")
	os.MkdirAll(other, 0o700)
	if _, _, err := credentials.Ensure(other, nil); err != nil {
		t.Fatal(err)
	}
	base := []string{"node", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{append(base, "--data-dir", other, "--join", tokA.String()), "belongs to another mesh"},
		{append(base, "--data-dir", other, "--insecure-open-mesh", "--psk", filepath.Join(other, credentials.SecretFile)), "cannot be combined"},
		{append(base, "--data-dir", other, "--join", "rm1.garbage"), "damaged"},
		{append(base, "--data-dir", other, "--mesh", "x", "--join", tokA.String()), "join token is for mesh"},
	} {
		var out, errb bytes.Buffer
		if code := run(c.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d, %q; want 2 with %q", c.args[5:], code, errb.String(), c.want)
		}
	}
}

// TestBusyPortIsAnError: a second node told to listen on a port the first
// holds exits 1 naming the address, instead of sharing the port
// (SO_REUSEPORT) and half the first one's connections. Its stderr holds
// ringmesh's lines only: none of the library's (fx's OnStart and rollback
// events, with module paths) repeating the error first. The secret the
// failed start created is gone with it.
func TestBusyPortIsAnError(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	listen := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)
	startOwn(t, filepath.Join(t.TempDir(), "a"), "--listen", listen)
	dir := filepath.Join(t.TempDir(), "b")
	cmd := exec.Command(systest.Binary(t), "node", "--data-dir", dir, "--listen", listen, "--no-mdns", "--no-dht")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err = cmd.Run()
	code := cmd.ProcessState.ExitCode()
	t.Logf("second node on a busy port: %v\n%s", err, errb.String())
	if code != 1 || !strings.Contains(lastLine(errb.String()), "address already in use") {
		t.Fatalf("second node on a busy port: exit %d, %q; want 1, address already in use", code, lastLine(errb.String()))
	}
	for _, l := range strings.Split(strings.TrimSpace(errb.String()), "\n") {
		if strings.Contains(l, "fxevent") || strings.Contains(l, "go.uber.org") || strings.Contains(l, "OnStart hook") || strings.Contains(l, "level=error") {
			t.Errorf("a library line on stderr: %s", l)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, credentials.SecretFile)); err == nil {
		t.Errorf("the failed start left %s behind", credentials.SecretFile)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestPlainAddressJoin: a token whose only address is a plain TCP one (no
// peer ID, as `ringmesh token --addr` puts a DNS name in), and a plain
// --join next to a data dir that holds the secret, both join: the joiner
// learns the member's peer ID by handshake. A node with another secret,
// given the same plain address, learns nothing and says so.
func TestPlainAddressJoin(t *testing.T) {
	a := startOwn(t, filepath.Join(t.TempDir(), "a"))
	plain, _, ok := strings.Cut(a.Addr, "/p2p/")
	if !ok {
		t.Fatalf("a's address %q has no /p2p/", a.Addr)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"token", "--data-dir", a.Dir, "--addr", plain}, &out, &errb); code != 0 {
		t.Fatalf("ringmesh token --addr: exit %d: %s", code, errb.String())
	}
	tok, err := credentials.ParseToken(strings.TrimSpace(out.String()))
	if err != nil || tok.Addrs[0] != plain {
		t.Fatalf("token addresses %v (%v); want %s first", tok.Addrs, err, plain)
	}
	tok.Addrs = tok.Addrs[:1] // only the plain one
	b := startOwn(t, filepath.Join(t.TempDir(), "b"), "--join", tok.String())
	t.Cleanup(func() {
		if t.Failed() {
			l, _ := os.ReadFile(b.Log)
			t.Logf("b log:\n%s", l)
		}
	})

	// c: the secret in its data dir already (as after a first token join),
	// and a plain --join.
	cdir := filepath.Join(t.TempDir(), "c")
	os.MkdirAll(cdir, 0o700)
	if _, _, err := credentials.Ensure(cdir, tok.Secret); err != nil {
		t.Fatal(err)
	}
	c := startOwn(t, cdir, "--join", plain)
	systest.Eventually(t, time.Minute, func() error {
		for _, p := range []*systest.Proc{b, c} {
			if !slices.Contains(alivePeers(t, a), p.ID) || !slices.Contains(alivePeers(t, p), a.ID) {
				return fmt.Errorf("a and %s do not see each other alive yet", filepath.Base(p.Dir))
			}
		}
		return nil
	})

	outsider := startOwn(t, withSecret(t, filepath.Join(t.TempDir(), "d")), "--join", plain)
	systest.Eventually(t, time.Minute, func() error {
		log, _ := os.ReadFile(outsider.Log)
		i := bytes.Index(log, []byte(plain+" belongs to a mesh with another secret"))
		if i < 0 {
			return fmt.Errorf("the outsider has not warned about its join address yet")
		}
		t.Logf("the outsider: %s", lastLine(string(log[i:])))
		return nil
	})
	if ids := alivePeers(t, outsider); len(ids) > 0 {
		t.Fatalf("the outsider sees members %v", ids)
	}
	if slices.Contains(alivePeers(t, a), outsider.ID) {
		t.Fatal("a sees the outsider")
	}
}
