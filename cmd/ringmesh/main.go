// Command ringmesh is the one binary of a ringmesh host. Subcommands:
//
//	ringmesh node        run a node (until SIGINT/SIGTERM)
//	ringmesh status      show the local node's view of the mesh
//	ringmesh token       print a join token for the local node's mesh
//	ringmesh bench       measure all-reduce, recovery, checkpoint fetch and mixed-speed training
//	ringmesh demo        local nodes train together; one is killed and rejoins
//	ringmesh checkpoint  save, list and fetch checkpoints through the local node
//	ringmesh reform      re-form the mesh when a majority of its list is gone for good
//	ringmesh completion  print a shell completion script
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

const usage = `ringmesh: a peer-to-peer training mesh

usage: ringmesh <command> [flags]

commands:
  node        run a node on this host until SIGINT/SIGTERM
  status      show the local node's members and round state (--json)
  token       print a join token: 'ringmesh node --join TOKEN' on another host joins the mesh
  bench       benchmarks: bench allreduce, recovery, checkpoint, train
  demo        local nodes train a model together; one is killed and rejoins
  checkpoint  save, list (ls) and fetch (get) checkpoints through the local node
  reform      re-form the mesh as a new epoch when a majority of its list is gone for good
  completion  print a shell completion script (bash, zsh, fish)

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
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "node":
		return cmdNode(rest, stderr)
	case "status":
		return cmdStatus(rest, stdout, stderr)
	case "token":
		return cmdToken(rest, stdout, stderr)
	case "bench":
		return cmdBench(rest, stdout, stderr)
	case "demo":
		return cmdDemo(rest, stdout, stderr)
	case "checkpoint":
		return cmdCheckpoint(rest, stdout, stderr)
	case "reform":
		return cmdReform(rest, stdout, stderr)
	case "completion":
		return cmdCompletion(rest, stdout, stderr)
	case "__complete", "__completeNoDesc":
		return cmdComplete(args, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, buildinfo.Version())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "ringmesh: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// signalContext is cancelled on SIGINT or SIGTERM: a node leaves
// gracefully, and bench and demo stop every process they started.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
