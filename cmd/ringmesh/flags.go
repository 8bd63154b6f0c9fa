package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	flag "github.com/spf13/pflag"
)

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }
func (m *multiFlag) Type() string   { return "strings" }
func (m *multiFlag) Set(s string) error {
	*m = append(*m, s)
	return nil
}

// newFlagSet returns a flag set (spf13/pflag: GNU --long flags, --flag=value
// or --flag value, -h) whose --help prints summary and the flags.
func newFlagSet(name, summary string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	if c := capture.Load(); c != nil {
		*c = fs
	}
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "%s\n\nflags:\n", summary)
		fs.PrintDefaults()
	}
	return fs
}

// applyEnv sets flags not given on the command line from the environment,
// with a prefix per command so that no variable crosses commands:
// RINGMESH_<FLAG> for node (the deployment files' RINGMESH_JOIN,
// RINGMESH_METRICS_ADDR), RINGMESH_<COMMAND>_<FLAG> for the others
// (RINGMESH_STATUS_JSON, RINGMESH_BENCH_ALLREDUCE_SIZE), and
// RINGMESH_DATA_DIR for every command's --data-dir. Names are upper case
// with dashes and spaces as underscores; repeatable flags take a
// comma-separated list.
func applyEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		env := envName(fs.Name(), f.Name)
		v, ok := os.LookupEnv(env)
		if !ok {
			return
		}
		if _, multi := f.Value.(*multiFlag); multi {
			for _, part := range strings.Split(v, ",") {
				if part = strings.TrimSpace(part); part != "" {
					if e := f.Value.Set(part); e != nil {
						err = fmt.Errorf("%s: %w", env, e)
					}
				}
			}
			return
		}
		if e := f.Value.Set(v); e != nil {
			err = fmt.Errorf("%s=%q: %w", env, v, e)
		}
	})
	return err
}

// envName is the environment twin of flag name of command cmd.
func envName(cmd, name string) string {
	up := func(s string) string { return strings.ToUpper(strings.NewReplacer("-", "_", " ", "_").Replace(s)) }
	if cmd == "node" || name == "data-dir" {
		return "RINGMESH_" + up(name)
	}
	return "RINGMESH_" + up(cmd) + "_" + up(name)
}

// parseFlags parses args and the environment; it returns an exit code >= 0
// when the command must stop (help or error).
func parseFlags(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		hint := "see --help"
		for _, a := range args {
			if len(a) > 2 && a[0] == '-' && a[1] != '-' && fs.Lookup(strings.SplitN(a[1:], "=", 2)[0]) != nil {
				hint = "long flags take two dashes: -" + a
				break
			}
		}
		fmt.Fprintf(fs.Output(), "ringmesh %s: %v (%s)\n", fs.Name(), err, hint)
		return 2
	}
	if err := applyEnv(fs); err != nil {
		fmt.Fprintf(fs.Output(), "ringmesh %s: %v\n", fs.Name(), err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "ringmesh %s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return 2
	}
	return -1
}

// localCommand parses the flags of a command that talks to the node of
// --data-dir (flags adds the command's own); code >= 0 means return it.
func localCommand(name, help string, args []string, stderr io.Writer, flags func(*flag.FlagSet)) (dataDir string, code int) {
	fs := newFlagSet(name, help, stderr)
	dir := fs.String("data-dir", "", "the node's data directory (required)")
	if flags != nil {
		flags(fs)
	}
	if code := parseFlags(fs, args); code >= 0 {
		return "", code
	}
	if *dir == "" {
		fmt.Fprintf(stderr, "ringmesh %s: --data-dir is required\n", name)
		return "", 2
	}
	return *dir, -1
}
