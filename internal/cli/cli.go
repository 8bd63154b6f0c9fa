// Package cli is what every ringmesh command parses its flags with:
// spf13/pflag flag sets (GNU --long flags) whose --help prints the
// command's summary, environment twins of every flag with a prefix per
// command, and a way for shell completion to learn each command's flags.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	flag "github.com/spf13/pflag"
)

// Strings is a repeatable string flag value.
type Strings []string

func (m *Strings) String() string { return strings.Join(*m, ",") }
func (m *Strings) Type() string   { return "strings" }
func (m *Strings) Set(s string) error {
	*m = append(*m, s)
	return nil
}

// NewFlagSet returns a flag set (spf13/pflag: GNU --long flags, --flag=value
// or --flag value, -h) whose --help prints summary and the flags.
func NewFlagSet(name, summary string, stderr io.Writer) *flag.FlagSet {
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

// ApplyEnv sets flags not given on the command line from the environment,
// with a prefix per command so that no variable crosses commands:
// RINGMESH_<FLAG> for node (the deployment files' RINGMESH_JOIN,
// RINGMESH_METRICS_ADDR), RINGMESH_<COMMAND>_<FLAG> for the others
// (RINGMESH_STATUS_JSON, RINGMESH_BENCH_ALLREDUCE_SIZE), and
// RINGMESH_DATA_DIR for every command's --data-dir. Names are upper case
// with dashes and spaces as underscores; repeatable flags take a
// comma-separated list.
func ApplyEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		env := EnvName(fs.Name(), f.Name)
		v, ok := os.LookupEnv(env)
		if !ok {
			return
		}
		if _, multi := f.Value.(*Strings); multi {
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

// EnvName is the environment twin of flag name of command cmd.
func EnvName(cmd, name string) string {
	up := func(s string) string { return strings.ToUpper(strings.NewReplacer("-", "_", " ", "_").Replace(s)) }
	if cmd == "node" || name == "data-dir" {
		return "RINGMESH_" + up(name)
	}
	return "RINGMESH_" + up(cmd) + "_" + up(name)
}

// Parse parses args and the environment; it returns an exit code >= 0
// when the command must stop (help or error).
func Parse(fs *flag.FlagSet, args []string) int {
	_, code := ParseArgs(fs, args, 0)
	return code
}

// ParseArgs is Parse for a command that takes up to maxArgs
// positional arguments, before, between or after the flags; it returns
// them.
func ParseArgs(fs *flag.FlagSet, args []string, maxArgs int) ([]string, int) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, 0
		}
		hint := "see --help"
		for _, a := range args {
			if len(a) > 2 && a[0] == '-' && a[1] != '-' && fs.Lookup(strings.SplitN(a[1:], "=", 2)[0]) != nil {
				hint = "long flags take two dashes: -" + a
				break
			}
		}
		fmt.Fprintf(fs.Output(), "ringmesh %s: %v (%s)\n", fs.Name(), err, hint)
		return nil, 2
	}
	if err := ApplyEnv(fs); err != nil {
		fmt.Fprintf(fs.Output(), "ringmesh %s: %v\n", fs.Name(), err)
		return nil, 2
	}
	if fs.NArg() > maxArgs {
		fmt.Fprintf(fs.Output(), "ringmesh %s: unexpected arguments %q\n", fs.Name(), fs.Args()[maxArgs:])
		return nil, 2
	}
	return fs.Args(), -1
}

// capture, while Describe runs, points at where NewFlagSet records the
// flag sets it makes; nil otherwise, so ordinary runs of commands (tests
// call run concurrently) share nothing through it.
var (
	captureMu sync.Mutex // one describe at a time
	capture   atomic.Pointer[*flag.FlagSet]
)

// Describe runs a command with --help, output discarded, and returns the
// flag set it defined (nil for one without flags). Every command defines
// its flags before it parses them, and --help stops it right there.
func Describe(run func(args []string, stdout, stderr io.Writer) int, args ...string) *flag.FlagSet {
	captureMu.Lock()
	defer captureMu.Unlock()
	var fs *flag.FlagSet
	capture.Store(&fs)
	run(append(args, "--help"), io.Discard, io.Discard)
	capture.Store(nil)
	return fs
}
