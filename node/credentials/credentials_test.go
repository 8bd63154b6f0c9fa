package credentials

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

const addr = "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWHQofZyJqdVdrZZnP4kpmhZ4brPx1Sjtjgp5Ld3GGSs2D"

func TestTokenRoundTrip(t *testing.T) {
	in := Token{Mesh: "lab", Secret: NewSecret(), Addrs: []string{addr}}
	out, err := ParseToken(in.String())
	if err != nil {
		t.Fatal(err)
	}
	if out.Mesh != in.Mesh || !bytes.Equal(out.Secret, in.Secret) || len(out.Addrs) != 1 || out.Addrs[0] != addr {
		t.Fatalf("round trip: %+v, want %+v", out, in)
	}
}

// TestParseTokenRejects: damaged or incomplete tokens get an error saying
// what is wrong, never a token.
func TestParseTokenRejects(t *testing.T) {
	good := Token{Mesh: "lab", Secret: NewSecret(), Addrs: []string{addr}}
	s := good.String()
	for _, c := range []struct{ tok, want string }{
		{"/ip4/1.2.3.4/tcp/1", "not a join token"},
		{s[:len(s)-5], "damaged"},
		{TokenPrefix + "!!!", "damaged"},
		{Token{Mesh: "lab", Secret: []byte{1, 2}, Addrs: []string{addr}}.String(), "no valid mesh secret"},
		{Token{Secret: NewSecret(), Addrs: []string{addr}}.String(), "names no mesh"},
		{Token{Mesh: "lab", Secret: NewSecret()}.String(), "0 member addresses"},
		{Token{Mesh: "lab", Secret: NewSecret(), Addrs: []string{"/ip4/1.2.3.4/udp/1/quic-v1"}}.String(), "address"},
		{TokenPrefix + strings.Repeat("A", maxToken), "at most"},
	} {
		if _, err := ParseToken(c.tok); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseToken(%.40q): %v, want an error with %q", c.tok, err, c.want)
		}
	}
}

// TestEnsure: a fresh dir gets a new 0600 secret that stays; a token's
// secret is written into a fresh dir and refused by a dir of another mesh.
func TestEnsure(t *testing.T) {
	dir := t.TempDir()
	path, created, err := Ensure(dir, nil)
	if err != nil || !created {
		t.Fatalf("fresh dir: %v, created %v", err, created)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode: %v, %v", fi, err)
	}
	s1, err := ReadSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, created, err := Ensure(dir, nil); err != nil || created {
		t.Fatalf("second Ensure: %v, created %v", err, created)
	}
	if s2, _ := ReadSecret(path); !bytes.Equal(s1, s2) {
		t.Fatal("the secret changed")
	}
	if _, _, err := Ensure(dir, s1); err != nil {
		t.Fatalf("the dir's own secret from a token: %v", err)
	}
	if _, _, err := Ensure(dir, NewSecret()); err == nil || !strings.Contains(err.Error(), "another mesh") {
		t.Fatalf("another mesh's token: %v", err)
	}
	fresh := t.TempDir()
	tok := NewSecret()
	p, _, err := Ensure(fresh, tok)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := ReadSecret(p); !bytes.Equal(got, tok) {
		t.Fatal("a fresh dir did not take the token's secret")
	}
}

func TestAddrsPrefersNonLoopback(t *testing.T) {
	lo := "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWHQofZyJqdVdrZZnP4kpmhZ4brPx1Sjtjgp5Ld3GGSs2D"
	got := Addrs(nil, []string{lo, "garbage", addr, addr, "/ip4/10.0.0.1/tcp/4001"}, 4)
	if len(got) != 2 || got[0] != addr || got[1] != lo {
		t.Fatalf("Addrs: %v", got)
	}
}

func TestAddrsPutsExplicitFirstPlainIncluded(t *testing.T) {
	dns := "/dns4/gpu1.lab.example/tcp/4001"
	got := Addrs([]string{dns, "/ip4/10.0.0.1/udp/4001/quic-v1", dns}, []string{addr}, 4)
	if len(got) != 2 || got[0] != dns || got[1] != addr {
		t.Fatalf("Addrs: %v", got)
	}
	tok := Token{Mesh: "m", Secret: NewSecret(), Addrs: got}
	back, err := ParseToken(tok.String())
	if err != nil || len(back.Addrs) != 2 || back.Addrs[0] != dns {
		t.Fatalf("a token with a plain address does not round-trip: %v %v", back.Addrs, err)
	}
}
