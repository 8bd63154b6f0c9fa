// Command ringmesh is the one binary of a ringmesh host: node, status,
// token, bench, demo, checkpoint, reform and completion (the table in
// commands.go, which usage, dispatch and shell completion all read).
//
// It only turns flags into package configs; the logic lives in the packages.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/ringmesh/ringmesh/internal/buildinfo"
)

// usageHead and usageTail frame the command table in the usage text.
const usageHead = `ringmesh: a peer-to-peer training mesh

usage: ringmesh <command> [flags]

commands:
`

const usageTail = `
Run 'ringmesh <command> --help' for the flags of a command, and
'ringmesh --version' for the version and VCS revision of this build. Flags
can also be set in the environment: RINGMESH_<FLAG> for node (dashes as
underscores, e.g. RINGMESH_JOIN), RINGMESH_<COMMAND>_<FLAG> for the others
(RINGMESH_STATUS_JSON, RINGMESH_CHECKPOINT_LS_ALL), and RINGMESH_DATA_DIR
for every command.
`

func main() {
	// A closed stdout or stderr (ringmesh bench ... | head) makes writes
	// fail instead of killing the process, so bench and demo still stop the
	// node processes they started and a node keeps running.
	signal.Ignore(syscall.SIGPIPE)
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return 2
	}
	cmd, rest := args[0], args[1:]
	for _, c := range commands() {
		if c.name == cmd {
			return c.run(rest, stdout, stderr)
		}
	}
	switch cmd {
	case "__complete", "__completeNoDesc":
		return cmdComplete(args, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, buildinfo.Version())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage())
		return 0
	}
	fmt.Fprintf(stderr, "ringmesh: unknown command %q\n\n%s", cmd, usage())
	return 2
}

// signalContext is cancelled on SIGINT or SIGTERM: a node leaves
// gracefully, and bench and demo stop every process they started.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
