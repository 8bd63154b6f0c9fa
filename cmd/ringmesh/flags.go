package main

import (
	"fmt"
	"io"

	flag "github.com/spf13/pflag"

	"github.com/ringmesh/ringmesh/internal/cli"
)

// localCommand parses the flags of a command that talks to the node of
// --data-dir (flags adds the command's own); code >= 0 means return it.
func localCommand(name, help string, args []string, stderr io.Writer, flags func(*flag.FlagSet)) (dataDir string, code int) {
	fs := cli.NewFlagSet(name, help, stderr)
	dir := fs.String("data-dir", "", "the node's data directory (required)")
	if flags != nil {
		flags(fs)
	}
	if code := cli.Parse(fs, args); code >= 0 {
		return "", code
	}
	if *dir == "" {
		fmt.Fprintf(stderr, "ringmesh %s: --data-dir is required\n", name)
		return "", 2
	}
	return *dir, -1
}
