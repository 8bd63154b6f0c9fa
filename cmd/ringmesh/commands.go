package main

import (
	"fmt"
	"io"
	"strings"
)

// command is one subcommand of ringmesh.
type command struct {
	name, short string
	run         func(args []string, stdout, stderr io.Writer) int
	// sub are the subcommands, each completed with its own flags.
	sub []string
	// args, when set, are the words completed in place of flags.
	args []string
}

// commands is the one table of ringmesh's commands: the usage text,
// dispatch (run) and shell completion all read it. (A function, not a
// variable: cmdCompletion reads the table.)
func commands() []command {
	return []command{
		{name: "node", short: "run a node on this host until SIGINT/SIGTERM",
			run: func(a []string, _, e io.Writer) int { return cmdNode(a, e) }},
		{name: "status", short: "show the local node's members and round state (--json)", run: cmdStatus},
		{name: "token", short: "print a join token: 'ringmesh node --join TOKEN' on another host joins the mesh", run: cmdToken},
		{name: "bench", short: "benchmarks: bench allreduce, recovery, checkpoint, train", run: cmdBench,
			sub: []string{"allreduce", "recovery", "checkpoint", "train"}},
		{name: "demo", short: "local nodes train a model together; one is killed and rejoins", run: cmdDemo},
		{name: "checkpoint", short: "save, list (ls) and fetch (get) checkpoints through the local node", run: cmdCheckpoint,
			sub: []string{"save", "ls", "get"}},
		{name: "reform", short: "re-form the mesh as a new epoch when a majority of its list is gone for good", run: cmdReform},
		{name: "completion", short: "print a shell completion script (bash, zsh, fish)", run: cmdCompletion,
			args: []string{"bash", "zsh", "fish"}},
	}
}

// usage is ringmesh's usage text, its command list from commands.
func usage() string {
	var b strings.Builder
	b.WriteString(usageHead)
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-11s %s\n", c.name, c.short)
	}
	b.WriteString(usageTail)
	return b.String()
}
