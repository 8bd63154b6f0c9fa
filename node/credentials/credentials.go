// Package credentials keeps a mesh private from its first command: the mesh
// secret (a libp2p private network key, so that a peer without it cannot
// complete a connection, gossip, rounds, checkpoints and DHT included) and
// the join token that carries it to another host with the mesh name and a
// few member addresses.
//
// A token is "rm1." followed by base64url (no padding) of a JSON object
// {"mesh", "secret" (64 hex digits), "addrs"}. It is a credential: whoever
// holds it can join the mesh.
package credentials

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/ringmesh/ringmesh/internal/atomicfile"
	"github.com/ringmesh/ringmesh/mesh"
)

// SecretFile is the mesh secret's file name in a data dir.
const SecretFile = "mesh.psk"

// TokenPrefix starts every join token.
const TokenPrefix = "rm1."

const (
	secretLen = 32
	maxToken  = 8 << 10
	maxAddrs  = 16
	pskHeader = "/key/swarm/psk/1.0.0/\n/base16/\n"
)

// Token is what a host needs to join a mesh.
type Token struct {
	Mesh   string
	Secret []byte   // 32 bytes
	Addrs  []string // member multiaddrs with /p2p/<id>
}

type tokenJSON struct {
	Mesh   string   `json:"mesh"`
	Secret string   `json:"secret"`
	Addrs  []string `json:"addrs"`
}

// IsToken reports whether s looks like a join token (rather than an
// address).
func IsToken(s string) bool { return strings.HasPrefix(s, TokenPrefix) }

// String encodes the token.
func (t Token) String() string {
	b, _ := json.Marshal(tokenJSON{Mesh: t.Mesh, Secret: hex.EncodeToString(t.Secret), Addrs: t.Addrs})
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// ParseToken decodes and checks a token.
func ParseToken(s string) (Token, error) {
	if !IsToken(s) {
		return Token{}, fmt.Errorf("credentials: not a join token (it starts with %q; print one with 'ringmesh token')", TokenPrefix)
	}
	if len(s) > maxToken {
		return Token{}, fmt.Errorf("credentials: join token of %d bytes, at most %d", len(s), maxToken)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, TokenPrefix))
	if err != nil {
		return Token{}, fmt.Errorf("credentials: join token is damaged (copy it whole): %w", err)
	}
	var j tokenJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Token{}, fmt.Errorf("credentials: join token is damaged (copy it whole): %w", err)
	}
	t := Token{Mesh: j.Mesh, Addrs: j.Addrs}
	if t.Secret, err = hex.DecodeString(j.Secret); err != nil || len(t.Secret) != secretLen {
		return Token{}, errors.New("credentials: join token holds no valid mesh secret")
	}
	if t.Mesh == "" {
		return Token{}, errors.New("credentials: join token names no mesh")
	}
	if len(t.Addrs) == 0 || len(t.Addrs) > maxAddrs {
		return Token{}, fmt.Errorf("credentials: join token holds %d member addresses, want 1 to %d", len(t.Addrs), maxAddrs)
	}
	for _, a := range t.Addrs {
		if err := mesh.CheckJoinAddr(a); err != nil {
			return Token{}, fmt.Errorf("credentials: join token address %q: %w", a, err)
		}
	}
	return t, nil
}

// NewSecret returns a random mesh secret.
func NewSecret() []byte {
	b := make([]byte, secretLen)
	rand.Read(b)
	return b
}

// encodeSecret writes the /key/swarm/psk/1.0.0/ form libp2p reads.
func encodeSecret(s []byte) []byte {
	return []byte(pskHeader + hex.EncodeToString(s) + "\n")
}

// ReadSecret reads a secret file written by Ensure (or any
// /key/swarm/psk/1.0.0/ base16 key).
func ReadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	rest, ok := bytes.CutPrefix(b, []byte(pskHeader))
	if !ok {
		return nil, fmt.Errorf("credentials: %s is not a /key/swarm/psk/1.0.0/ base16 key", path)
	}
	s, err := hex.DecodeString(strings.TrimSpace(string(rest)))
	if err != nil || len(s) != secretLen {
		return nil, fmt.Errorf("credentials: %s holds no 32-byte base16 key", path)
	}
	return s, nil
}

// Ensure returns the path of the data dir's mesh secret. With from (a
// token's secret), a data dir without a secret gets it, and one holding
// another secret is an error (the data dir belongs to another mesh).
// Without, a data dir without a secret gets a new random one (created
// reports that). The file is written 0600, atomically.
func Ensure(dataDir string, from []byte) (path string, created bool, err error) {
	path = filepath.Join(dataDir, SecretFile)
	have, err := ReadSecret(path)
	switch {
	case err == nil && from != nil && !bytes.Equal(have, from):
		return "", false, fmt.Errorf("credentials: the data dir %s belongs to another mesh (its %s is not the token's secret): use a fresh --data-dir to join this one", dataDir, SecretFile)
	case err == nil:
		return path, false, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", false, err
	}
	s := from
	if s == nil {
		s = NewSecret()
	}
	if err := atomicfile.Write(path, encodeSecret(s), 0o600); err != nil {
		return "", false, fmt.Errorf("credentials: write %s: %w", path, err)
	}
	return path, true, nil
}

// Addrs picks up to max addresses for a token: first the explicit ones (as
// given, plain TCP addresses included), then from a node's own addresses and
// its members' (full /p2p ones only), non-loopback before loopback, in
// order, each once.
func Addrs(explicit, candidates []string, max int) []string {
	var out, lo []string
	seen := map[string]bool{}
	for _, a := range explicit {
		if !seen[a] && mesh.CheckJoinAddr(a) == nil {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, a := range candidates {
		if seen[a] {
			continue
		}
		seen[a] = true
		ma, err := multiaddr.NewMultiaddr(a)
		if err != nil {
			continue
		}
		if _, err := peer.AddrInfoFromP2pAddr(ma); err != nil {
			continue
		}
		if isLoopback(ma) {
			lo = append(lo, a)
		} else {
			out = append(out, a)
		}
	}
	out = append(out, lo...)
	if len(out) > max {
		out = out[:max]
	}
	return out
}

func isLoopback(ma multiaddr.Multiaddr) bool {
	if v, err := ma.ValueForProtocol(multiaddr.P_IP4); err == nil {
		return strings.HasPrefix(v, "127.")
	}
	if v, err := ma.ValueForProtocol(multiaddr.P_IP6); err == nil {
		return v == "::1"
	}
	return false
}
