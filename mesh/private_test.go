package mesh

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

func writePSK(t *testing.T) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "swarm.key")
	body := "/key/swarm/psk/1.0.0/\n/base16/\n" + hex.EncodeToString(key) + "\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newIdentity creates a data dir with an identity and returns both.
func newIdentity(t *testing.T) (string, peer.ID) {
	t.Helper()
	dir := t.TempDir()
	k, err := loadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return dir, id
}

// TestPrivateMesh: a node with the wrong PSK and a node not on the allow
// list cannot connect and never appear in a member's view, while the
// allowed nodes with the right key do.
func TestPrivateMesh(t *testing.T) {
	psk, otherPSK := writePSK(t), writePSK(t)
	aDir, aID := newIdentity(t)
	bDir, bID := newIdentity(t)
	dDir, dID := newIdentity(t) // allowed, wrong key
	oDir, _ := newIdentity(t)   // right key, not allowed
	allow := filepath.Join(t.TempDir(), "allow")
	list := "# members\n" + aID.String() + "\n" + bID.String() + " # b\n\n" + dID.String() + "\n"
	if err := os.WriteFile(allow, []byte(list), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := func(dir, key string) Config {
		c := localConfig(dir)
		c.PSKFile, c.AllowFile = key, allow
		return c
	}
	a := startNode(t, cfg(aDir, psk), nil)
	join := func(c Config) Config { c.Join = []string{a.joinAddr()}; return c }
	d := startNode(t, join(cfg(dDir, otherPSK)), nil)
	outsider := join(cfg(oDir, psk))
	outsider.AllowFile = "" // it would let anyone in; a's list keeps it out
	o := startNode(t, outsider, nil)

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	// The wrong key fails the handshake itself.
	if err := d.Host().Connect(ctx, peer.AddrInfo{ID: a.Self(), Addrs: a.Host().Addrs()}); err == nil {
		t.Error("wrong psk: connect to a succeeded, want an error")
	}
	// The outsider's handshake may complete on its side (TLS 1.3), but a's
	// gater drops the connection before it is ever added to a's swarm.
	_ = o.Host().Connect(ctx, peer.AddrInfo{ID: a.Self(), Addrs: a.Host().Addrs()})
	waitFor(t, "outsider's connection closed by a", func() (bool, string) {
		return o.Host().Network().Connectedness(a.Self()) != network.Connected, "still connected"
	})
	b := startNode(t, join(cfg(bDir, psk)), nil)
	for _, n := range []*testNode{a, b} {
		waitFor(t, "a and b alive", func() (bool, string) { return seesAlive(n, a, b) })
	}
	for _, n := range []*testNode{a, b} {
		v := n.View()
		if len(v.Members) != 2 {
			t.Errorf("%s sees %d members, want 2 (a, b): %v", short(n.Self()), len(v.Members), v.Alive())
		}
		for _, bad := range []*testNode{d, o} {
			if n.Host().Network().Connectedness(bad.Self()) == network.Connected {
				t.Errorf("%s is connected to %s", short(n.Self()), short(bad.Self()))
			}
		}
	}
	for _, bad := range []*testNode{d, o} {
		if v := bad.View(); len(v.Members) != 1 {
			t.Errorf("%s sees %d members, want only itself", short(bad.Self()), len(v.Members))
		}
	}
}
