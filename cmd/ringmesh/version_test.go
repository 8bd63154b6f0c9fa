package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/cli"

	flag "github.com/spf13/pflag"

	"github.com/ringmesh/ringmesh/internal/systest"
)

// TestVersion: ringmesh --version and ringmesh version print one line
// naming the build's version and revision.
func TestVersion(t *testing.T) {
	for _, arg := range []string{"--version", "version"} {
		var out, errb bytes.Buffer
		if code := run([]string{arg}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "ringmesh ") || !strings.Contains(out.String(), "revision ") {
			t.Errorf("ringmesh %s: exit %d, %q", arg, code, out.String())
		}
	}
}

// TestLogFormatJSON: --log-format json makes every line the node writes a
// JSON object (the first ones say where it listens and its version); a
// bad format is refused.
func TestLogFormatJSON(t *testing.T) {
	dir := t.TempDir()
	p := startOwn(t, dir+"/n", "--log-format", "json")
	p.Stop(10 * time.Second)
	b, err := os.ReadFile(p.Log)
	if err != nil {
		t.Fatal(err)
	}
	started := false
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON line: %q", line)
		}
		if m["msg"] == "node started" && m["version"] != nil && m["addrs"] != nil {
			started = true
		}
	}
	if !started {
		t.Fatal("no node started line with version and addrs")
	}
	var out, errb bytes.Buffer
	if code := run([]string{"node", "--data-dir", dir + "/m", "--log-format", "xml"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "text or json") {
		t.Fatalf("--log-format xml: exit %d, %q", code, errb.String())
	}
}

// TestBadJoinWarns: a --join address nobody answers on is a warning at the
// default log level, naming the address, and the node keeps retrying.
func TestBadJoinWarns(t *testing.T) {
	const bad = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWHQofZyJqdVdrZZnP4kpmhZ4brPx1Sjtjgp5Ld3GGSs2D"
	p := startOwn(t, withSecret(t, t.TempDir()+"/n"), "--join", bad, "--log-level", "info")
	systest.Eventually(t, 30*time.Second, func() error {
		b, err := os.ReadFile(p.Log)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "level=WARN") && strings.Contains(line, "join address does not answer") && strings.Contains(line, "/ip4/127.0.0.1/tcp/9") {
				return nil
			}
		}
		return fmt.Errorf("no warning naming the join address yet")
	})
	if _, err := systest.Status(p.Dir); err != nil {
		t.Fatalf("the node stopped serving: %v", err)
	}
}

// TestEnvTwinsPerCommand: every command reads its flags from variables
// with its own prefix, so none crosses commands: RINGMESH_JSON (node's
// prefix) does not turn status output into JSON, RINGMESH_STATUS_JSON
// does, and RINGMESH_DATA_DIR is every command's --data-dir.
func TestEnvTwinsPerCommand(t *testing.T) {
	t.Setenv("RINGMESH_JSON", "true")
	t.Setenv("RINGMESH_DATA_DIR", t.TempDir())
	var asJSON *bool
	dir, code := localCommand("status", "", nil, io.Discard, func(fs *flag.FlagSet) { asJSON = fs.Bool("json", false, "") })
	if code >= 0 || dir == "" || *asJSON {
		t.Fatalf("status: data dir %q (want it from RINGMESH_DATA_DIR), json %v (want RINGMESH_JSON ignored), code %d", dir, *asJSON, code)
	}
	t.Setenv("RINGMESH_STATUS_JSON", "true")
	if _, code := localCommand("status", "", nil, io.Discard, func(fs *flag.FlagSet) { asJSON = fs.Bool("json", false, "") }); code >= 0 || !*asJSON {
		t.Fatalf("status: RINGMESH_STATUS_JSON not applied (json %v, code %d)", *asJSON, code)
	}
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	j := fs.Bool("json", false, "")
	if code := cli.Parse(fs, nil); code >= 0 || !*j {
		t.Fatalf("node: RINGMESH_JSON not applied (code %d)", code)
	}
}
