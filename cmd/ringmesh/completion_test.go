package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestCompletion: the completion scripts generate, and the __complete
// helper they call completes commands, subcommands and each command's own
// flags.
func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		var out, errb bytes.Buffer
		if code := run([]string{"completion", shell}, &out, &errb); code != 0 || !strings.Contains(out.String(), "ringmesh") {
			t.Errorf("completion %s: exit %d, %d bytes, %s", shell, code, out.Len(), errb.String())
		}
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{""}, []string{"node", "status", "checkpoint", "bench", "completion"}},
		{[]string{"node", "--jo"}, []string{"--join"}},
		{[]string{"node", "--metrics"}, []string{"--metrics-addr"}},
		{[]string{"checkpoint", ""}, []string{"save", "ls", "get"}},
		{[]string{"bench", "allreduce", "--si"}, []string{"--size"}},
		{[]string{"status", "--"}, []string{"--data-dir", "--json", "--watch"}},
	} {
		var out, errb bytes.Buffer
		run(append([]string{"__complete"}, c.args...), &out, &errb)
		for _, w := range c.want {
			if !strings.Contains(out.String(), w+"\t") && !strings.Contains(out.String(), w+"\n") {
				t.Errorf("complete %q: %q missing from\n%s", c.args, w, out.String())
			}
		}
	}
}

// TestGNUFlags: flags are GNU style (spf13/pflag): --flag=value and
// --flag value both work, and a single-dash long flag is refused with a
// hint.
func TestGNUFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"status", "--data-dir=" + t.TempDir()}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "no node") && !strings.Contains(errb.String(), "not running") && !strings.Contains(errb.String(), "socket") {
		t.Errorf("status --data-dir=DIR with no node: exit %d, %q; want 1 saying there is no node", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"status", "-data-dir", t.TempDir()}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "two dashes") {
		t.Errorf("status -data-dir: exit %d, %q; want 2 with a hint about two dashes", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"node", "--help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "--metrics-addr") {
		t.Errorf("node --help: exit %d; want 0 listing --metrics-addr:\n%s", code, errb.String())
	}
}

// TestEveryCommandAnswersHelp: every command of the table is in the usage
// text, dispatches, and answers --help with exit 0 (bench and checkpoint
// through each subcommand).
func TestEveryCommandAnswersHelp(t *testing.T) {
	u := usage()
	for _, c := range commands() {
		if !strings.Contains(u, "\n  "+c.name+" ") {
			t.Errorf("usage does not list %s", c.name)
		}
		calls := [][]string{{c.name, "--help"}}
		for _, s := range c.sub {
			calls = append(calls, []string{c.name, s, "--help"})
		}
		for _, args := range calls {
			var out, errOut strings.Builder
			if code := run(args, &out, &errOut); code != 0 || out.Len()+errOut.Len() == 0 {
				t.Errorf("ringmesh %s: exit %d, %d bytes of help; want 0 and help", strings.Join(args, " "), code, out.Len()+errOut.Len())
			}
		}
	}
}
