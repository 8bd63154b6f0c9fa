package cli

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// TestEnvName: node's flags have the bare prefix, other commands their
// own, and --data-dir is RINGMESH_DATA_DIR everywhere.
func TestEnvName(t *testing.T) {
	for _, c := range [][3]string{
		{"node", "metrics-addr", "RINGMESH_METRICS_ADDR"},
		{"bench allreduce", "size", "RINGMESH_BENCH_ALLREDUCE_SIZE"},
		{"checkpoint ls", "data-dir", "RINGMESH_DATA_DIR"},
		{"status", "json", "RINGMESH_STATUS_JSON"},
	} {
		if got := EnvName(c[0], c[1]); got != c[2] {
			t.Errorf("EnvName(%q, %q) = %s, want %s", c[0], c[1], got, c[2])
		}
	}
}

// TestApplyEnv: a variable sets a flag the command line did not give; the
// command line wins; a repeatable flag takes a comma-separated list; a bad
// value is an error naming the variable.
func TestApplyEnv(t *testing.T) {
	t.Setenv("RINGMESH_STATUS_JSON", "true")
	t.Setenv("RINGMESH_STATUS_NAME", "from-env")
	t.Setenv("RINGMESH_STATUS_JOIN", "a, b")
	fs := NewFlagSet("status", "", io.Discard)
	asJSON := fs.Bool("json", false, "")
	name := fs.String("name", "", "")
	var join Strings
	fs.Var(&join, "join", "")
	if code := Parse(fs, []string{"--name", "flag"}); code >= 0 {
		t.Fatalf("Parse: code %d", code)
	}
	if !*asJSON || *name != "flag" || strings.Join(join, "|") != "a|b" {
		t.Errorf("json %v, name %q, join %q", *asJSON, *name, join)
	}
	t.Setenv("RINGMESH_STATUS_COUNT", "many")
	fs = NewFlagSet("status", "", io.Discard)
	fs.Int("count", 0, "")
	if err := ApplyEnv(fs); err == nil || !strings.Contains(err.Error(), "RINGMESH_STATUS_COUNT") {
		t.Errorf("bad value: %v", err)
	}
}

// TestParseArgs: positional arguments may come before, between or after
// flags, up to maxArgs; more, an unknown flag and a single-dash long flag
// exit 2 with a message; --help exits 0.
func TestParseArgs(t *testing.T) {
	var errb bytes.Buffer
	fs := NewFlagSet("checkpoint save", "usage: save", &errb)
	step := fs.Uint64("step", 0, "")
	pos, code := ParseArgs(fs, []string{"FILE", "--step", "3"}, 1)
	if code >= 0 || len(pos) != 1 || pos[0] != "FILE" || *step != 3 {
		t.Fatalf("FILE --step 3: %q, step %d, code %d", pos, *step, code)
	}
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"A", "B"}, 2, "unexpected arguments"},
		{[]string{"--nope"}, 2, "unknown flag"},
		{[]string{"-step", "3"}, 2, "two dashes"},
		{[]string{"--help"}, 0, "usage: save"},
	} {
		errb.Reset()
		fs := NewFlagSet("checkpoint save", "usage: save", &errb)
		fs.Uint64("step", 0, "")
		if _, code := ParseArgs(fs, c.args, 1); code != c.code || !strings.Contains(errb.String(), c.msg) {
			t.Errorf("%q: code %d, %q; want %d and %q", c.args, code, errb.String(), c.code, c.msg)
		}
	}
}

// TestDescribe: Describe returns the flag set a command defines, and
// ordinary runs record nothing.
func TestDescribe(t *testing.T) {
	run := func(args []string, _, stderr io.Writer) int {
		fs := NewFlagSet("x", "", stderr)
		fs.Bool("verbose", false, "")
		return Parse(fs, args)
	}
	fs := Describe(run)
	if fs == nil || fs.Lookup("verbose") == nil {
		t.Fatalf("Describe: %v", fs)
	}
	if capture.Load() != nil {
		t.Fatal("capture left set after Describe")
	}
}
