package main

import (
	"fmt"
	"io"

	"github.com/ringmesh/ringmesh/internal/cli"
	"github.com/spf13/cobra"
)

const completionHelp = `usage: ringmesh completion bash|zsh|fish

Prints a shell completion script for ringmesh's commands and flags:

  source <(ringmesh completion bash)                  # this shell
  ringmesh completion bash > /etc/bash_completion.d/ringmesh
  ringmesh completion zsh > "${fpath[1]}/_ringmesh"`

// completionRoot builds the cobra command tree, with each command's own
// flags, for cobra's completion scripts and its __complete helper.
func completionRoot(stdout io.Writer) *cobra.Command {
	root := &cobra.Command{Use: "ringmesh", Short: "a peer-to-peer training mesh", SilenceUsage: true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true}}
	root.SetOut(stdout)
	noop := func(*cobra.Command, []string) {}
	for _, c := range commands() {
		cmd := &cobra.Command{Use: c.name, Short: c.short, Run: noop, ValidArgs: c.args}
		if c.args != nil {
			root.AddCommand(cmd)
			continue
		}
		if len(c.sub) == 0 {
			if fs := cli.Describe(c.run); fs != nil {
				cmd.Flags().AddFlagSet(fs)
			}
		}
		for _, s := range c.sub {
			sub := &cobra.Command{Use: s, Run: noop}
			if fs := cli.Describe(c.run, s); fs != nil {
				sub.Flags().AddFlagSet(fs)
			}
			cmd.AddCommand(sub)
		}
		root.AddCommand(cmd)
	}
	return root
}

// cmdCompletion prints the completion script for a shell.
func cmdCompletion(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, completionHelp)
		return 2
	}
	root := completionRoot(stdout)
	var err error
	switch args[0] {
	case "bash":
		err = root.GenBashCompletionV2(stdout, true)
	case "zsh":
		err = root.GenZshCompletion(stdout)
	case "fish":
		err = root.GenFishCompletion(stdout, true)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, completionHelp)
		return 0
	default:
		fmt.Fprintf(stderr, "ringmesh completion: unknown shell %q\n\n%s\n", args[0], completionHelp)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh completion: %v\n", err)
		return 1
	}
	return 0
}

// cmdComplete answers the completion scripts' queries (cobra's hidden
// __complete command).
func cmdComplete(args []string, stdout, stderr io.Writer) int {
	root := completionRoot(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		return 1
	}
	return 0
}
