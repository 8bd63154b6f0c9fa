package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	flag "github.com/spf13/pflag"

	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node"
	"github.com/ringmesh/ringmesh/node/credentials"
)

const tokenHelp = `usage: ringmesh token --data-dir DIR [--addr ADDR ...]

Prints a join token for the mesh of the node running on DIR: the mesh name,
its secret and a few member addresses. On another host,

  ringmesh node --data-dir DIR2 --join TOKEN

joins the mesh. Anyone holding the token can join: share it like a password.
--addr puts an address of your choosing first, for example the DNS name or
the address other hosts reach this node by: /dns4/gpu1.lab/tcp/4001 (plain
TCP addresses need no /p2p/ID; the joiner learns it by handshake).`

func cmdToken(args []string, stdout, stderr io.Writer) int {
	var addrs multiFlag
	dataDir, code := localCommand("token", tokenHelp, args, stderr, func(fs *flag.FlagSet) {
		fs.Var(&addrs, "addr", "address to put first in the token: /dns4/HOST/tcp/PORT, /ip4/A/tcp/P, or a full one ending in /p2p/ID (repeatable)")
	})
	if code >= 0 {
		return code
	}
	for _, a := range addrs {
		if err := mesh.CheckJoinAddr(a); err != nil {
			fmt.Fprintf(stderr, "ringmesh token: --addr %q: %v\n", a, err)
			return 2
		}
	}
	t, err := tokenFor(dataDir, addrs)
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh token: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, t)
	return 0
}

// tokenFor builds the join token of the node running on dataDir.
func tokenFor(dataDir string, explicit []string) (credentials.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return node.JoinToken(ctx, dataDir, explicit)
}

// joinTokens replaces the join tokens among join by their addresses and
// sets the mesh name from them; it returns the token (all must agree).
func joinTokens(join []string, cfg *node.Config, meshSet bool) (*credentials.Token, error) {
	var tok *credentials.Token
	cfg.Mesh.Join = nil
	for _, j := range join {
		if !credentials.IsToken(j) {
			cfg.Mesh.Join = append(cfg.Mesh.Join, j)
			continue
		}
		t, err := credentials.ParseToken(j)
		if err != nil {
			return nil, fmt.Errorf("--join: %w", err)
		}
		if tok != nil && (tok.Mesh != t.Mesh || string(tok.Secret) != string(t.Secret)) {
			return nil, fmt.Errorf("--join: two tokens of different meshes")
		}
		tok = &t
		cfg.Mesh.Join = append(cfg.Mesh.Join, t.Addrs...)
	}
	if tok != nil {
		if meshSet && cfg.Mesh.Mesh != tok.Mesh {
			return nil, fmt.Errorf("--mesh %q, but the join token is for mesh %q", cfg.Mesh.Mesh, tok.Mesh)
		}
		cfg.Mesh.Mesh = tok.Mesh
	}
	return tok, nil
}

// meshSecret decides how the node keeps outsiders out: --psk, the data
// dir's secret (from the token, or created for a fresh data dir), or, with
// --insecure-open-mesh only, nothing.
func meshSecret(cfg *node.Config, tok *credentials.Token, open bool, logger *slog.Logger) error {
	switch {
	case open && (tok != nil || cfg.Mesh.PSKFile != ""):
		return fmt.Errorf("--insecure-open-mesh cannot be combined with --psk or a join token")
	case open:
		logger.Warn("OPEN MESH (--insecure-open-mesh): no mesh secret; any peer that reaches this node can join, read the model and add gradients")
		return nil
	case cfg.Mesh.PSKFile != "" && tok != nil:
		return fmt.Errorf("--psk cannot be combined with a join token (the token carries the mesh secret)")
	case cfg.Mesh.PSKFile != "":
		return nil
	}
	var from []byte
	if tok != nil {
		from = tok.Secret
	}
	path, created, err := credentials.Ensure(cfg.DataDir, from)
	if err != nil {
		return err
	}
	cfg.Mesh.PSKFile = path
	if created && tok == nil {
		logger.Info("new private mesh: created its secret; print a join token for other hosts with 'ringmesh token --data-dir "+cfg.DataDir+"'", "secret", path)
	}
	return nil
}
