package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/ringmesh/ringmesh/internal/cli"

	flag "github.com/spf13/pflag"

	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node"
	"github.com/ringmesh/ringmesh/node/client"
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
	var addrs cli.Strings
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
	st, err := client.ReadStatus(ctx, dataDir)
	if err != nil {
		return credentials.Token{}, err
	}
	return node.JoinToken(st, explicit)
}
