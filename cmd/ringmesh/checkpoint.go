package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ringmesh/ringmesh/internal/cli"

	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	flag "github.com/spf13/pflag"

	"github.com/ringmesh/ringmesh/internal/units"
	"github.com/ringmesh/ringmesh/node"
	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
)

const checkpointHelp = `usage: ringmesh checkpoint <save|ls|get> --data-dir DIR [flags]

Checkpoints go through the running node of DIR (its local API); the store in
DIR/checkpoints is locked by that node and never opened by this command.

  save --step N FILE          store FILE as the checkpoint of step N: the node
                              chunks and hashes it (SHA-256), writes it
                              atomically and announces it to the mesh, which
                              replicates it in the background
  ls [--all] [--json]         checkpoints of this run held here or announced by
                              members of the agreed list: step, root, size,
                              providers, whether this node holds it (--all:
                              every run and announcer)
  get (--latest | --root HASH) -o FILE
                              fetch from every provider at once (each chunk
                              verified; an interrupted fetch resumes), then
                              write FILE atomically; progress on stderr

Run 'ringmesh checkpoint <save|ls|get> --help' for a command's flags.`

func cmdCheckpoint(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, checkpointHelp)
		return 2
	}
	switch args[0] {
	case "save":
		return checkpointSave(args[1:], stdout, stderr)
	case "ls", "list":
		return checkpointList(args[1:], stdout, stderr)
	case "get", "fetch":
		return checkpointGet(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, checkpointHelp)
		return 0
	}
	fmt.Fprintf(stderr, "ringmesh checkpoint: unknown command %q\n\n%s\n", args[0], checkpointHelp)
	return 2
}

// checkpointFlags adds the checkpoint flags of `ringmesh node` to fs.
func checkpointFlags(fs *flag.FlagSet, c *node.CheckpointConfig) {
	fs.IntVar(&c.Store.Keep, "keep-checkpoints", c.Store.Keep, "complete checkpoints kept in the store (newest first); ones being served or fetched are never deleted")
	fs.IntVar(&c.Replicator.Replicas, "replicas", c.Replicator.Replicas, "nodes that should hold each new checkpoint (background replication)")
	fs.Var((*units.Size)(&c.Replicator.RateLimit), "replication-rate", "bytes/s bound on background replication, e.g. 32MiB (0: unlimited)")
	fs.Var((*units.Size)(&c.Fetch.RateLimit), "fetch-rate", "bytes/s bound on checkpoint fetches asked for by trainers and 'checkpoint get' (0: unlimited)")
	fs.DurationVar(&c.JoinTimeout, "join-checkpoint-timeout", c.JoinTimeout, "how long a joining trainer that wants state waits for the checkpoint of its entry step")
}

func dialNode(ctx context.Context, name, dataDir string, stderr io.Writer) (*client.Client, int) {
	if dataDir == "" {
		fmt.Fprintf(stderr, "ringmesh checkpoint %s: --data-dir is required (or RINGMESH_DATA_DIR)\n", name)
		return nil, 2
	}
	c, err := client.Dial(ctx, dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh checkpoint %s: %v\n", name, err)
		return nil, 1
	}
	return c, -1
}

// apiFailure prints an API error plainly and returns the exit code.
func apiFailure(stderr io.Writer, name string, err error) int {
	var ae *client.APIError
	if errors.As(err, &ae) {
		fmt.Fprintf(stderr, "ringmesh checkpoint %s: %s (%s)\n", name, ae.Msg, ae.Code)
		return 1
	}
	fmt.Fprintf(stderr, "ringmesh checkpoint %s: %v\n", name, err)
	return 1
}

func checkpointSave(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("checkpoint save", "usage: ringmesh checkpoint save --data-dir DIR --step N FILE\n\n"+
		"Stores FILE as the checkpoint of step N in the node's store (chunked, hashed,\n"+
		"written atomically) and announces it; prints its root hash.", stderr)
	dataDir := fs.String("data-dir", "", "the node's data directory (required)")
	step := fs.Uint64("step", 0, "the training step the file holds the state of")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long")
	pos, code := cli.ParseArgs(fs, args, 1)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "ringmesh checkpoint save: give the FILE to save")
		return 2
	}
	path, err := filepath.Abs(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh checkpoint save: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, code := dialNode(ctx, "save", *dataDir, stderr)
	if code >= 0 {
		return code
	}
	defer c.Close()
	resp, err := c.CheckpointSave(ctx, path, *step)
	if err != nil {
		return apiFailure(stderr, "save", err)
	}
	ck := resp.Checkpoint
	fmt.Fprintf(stdout, "saved step %d root %s size %s\n", ck.Step, ck.Root, humanBytes(ck.Size))
	return 0
}

func checkpointList(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("checkpoint ls", "usage: ringmesh checkpoint ls --data-dir DIR [--all] [--json]\n\n"+
		"Lists the checkpoints that count for this node's run (held here, or announced\n"+
		"by members of its agreed list), newest step first: root hash, size, run,\n"+
		"providers, held locally. --all lists every checkpoint known, of any run.", stderr)
	dataDir := fs.String("data-dir", "", "the node's data directory (required)")
	all := fs.Bool("all", false, "every checkpoint known, of any run and announcer")
	asJSON := fs.Bool("json", false, "print one JSON array of {step, root, size, local, providers, run_id}")
	if code := cli.Parse(fs, args); code >= 0 {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, code := dialNode(ctx, "ls", *dataDir, stderr)
	if code >= 0 {
		return code
	}
	defer c.Close()
	resp, err := c.CheckpointList(ctx, *all)
	if err != nil {
		return apiFailure(stderr, "ls", err)
	}
	if *asJSON {
		list := resp.Checkpoints
		if list == nil {
			list = []localapi.CheckpointInfo{}
		}
		b, _ := json.Marshal(list)
		fmt.Fprintln(stdout, string(b))
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tROOT\tSIZE\tRUN\tLOCAL\tPROVIDERS")
	for _, ck := range resp.Checkpoints {
		local := "no"
		if ck.Local {
			local = "yes"
		}
		run := ck.RunID
		if run == "" {
			run = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d %s\n", ck.Step, ck.Root, humanBytes(ck.Size), run, local,
			len(ck.Providers), shortIDs(ck.Providers))
	}
	tw.Flush()
	return 0
}

func shortIDs(ids []string) string {
	var out []string
	for _, id := range ids {
		out = append(out, node.ShortID(id))
	}
	return strings.Join(out, ",")
}

// humanBytes formats n for people: "1.5 GiB" (dustin/go-humanize).
func humanBytes(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

// getResult is what `checkpoint get --json` prints.
type getResult struct {
	Checkpoint localapi.CheckpointInfo `json:"checkpoint"`
	Fetch      localapi.FetchStats     `json:"fetch"`
}

func checkpointGet(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("checkpoint get", "usage: ringmesh checkpoint get --data-dir DIR (--latest | --root HASH) -o FILE\n\n"+
		"Has the node fetch a checkpoint from all its providers at once (every chunk\n"+
		"verified against the manifest, corrupt providers reported and avoided, an\n"+
		"interrupted fetch resumed without refetching verified chunks), then write\n"+
		"it to FILE atomically. Progress (bytes, rate, providers) goes to stderr.\n"+
		"Exit status 1 with a plain reason: unknown root (not_found), no provider\n"+
		"reachable (unavailable), disk full (disk_full), data corrupt at every\n"+
		"provider (hash_mismatch).", stderr)
	dataDir := fs.String("data-dir", "", "the node's data directory (required)")
	latest := fs.Bool("latest", false, "the newest complete checkpoint in the mesh")
	root := fs.String("root", "", "the checkpoint's root hash (64 hex digits, from 'checkpoint ls')")
	out := fs.StringP("output", "o", "", "output file (required)")
	asJSON := fs.Bool("json", false, "print the result as JSON on stdout")
	timeout := fs.Duration("timeout", 2*time.Hour, "give up after this long")
	if code := cli.Parse(fs, args); code >= 0 {
		return code
	}
	if *latest == (*root != "") || *out == "" {
		fmt.Fprintln(stderr, "ringmesh checkpoint get: give one of --latest or --root HASH, and -o FILE")
		return 2
	}
	dest, err := filepath.Abs(*out)
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh checkpoint get: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, code := dialNode(ctx, "get", *dataDir, stderr)
	if code >= 0 {
		return code
	}
	defer c.Close()
	var bar *progressbar.ProgressBar
	resp, err := c.CheckpointFetchProgress(ctx, client.Fetch{Root: *root, Latest: *latest, Dest: dest}, 500*time.Millisecond,
		func(p localapi.FetchProgress) {
			if bar == nil {
				// schollz/progressbar: bytes, rate, time left.
				bar = progressbar.NewOptions64(p.Size, progressbar.OptionSetWriter(stderr), progressbar.OptionShowBytes(true),
					progressbar.OptionSetWidth(30), progressbar.OptionThrottle(250*time.Millisecond), progressbar.OptionShowCount())
			}
			bar.Describe(fmt.Sprintf("step %d, %d providers", p.Step, p.Providers))
			bar.Set64(p.Done)
		})
	if bar != nil {
		fmt.Fprintln(stderr)
	}
	if err != nil {
		return apiFailure(stderr, "get", err)
	}
	ck, st := *resp.Checkpoint, *resp.Fetch
	if st.Local {
		fmt.Fprintf(stderr, "step %d root %s: held locally, nothing fetched\n", ck.Step, ck.Root)
	} else {
		secs := max(float64(st.FetchMS)/1000, 0.001)
		fmt.Fprintf(stderr, "fetched step %d root %s: %s in %.2fs (%s/s) from %d providers; chunks: %d fetched, %d resumed, %d bad providers\n",
			ck.Step, ck.Root, humanBytes(st.Fetched), secs, humanBytes(int64(float64(st.Fetched)/secs)),
			len(st.Providers), st.ChunksFetched, st.ChunksResumed, len(st.BadPeers))
	}
	if *asJSON {
		b, _ := json.Marshal(getResult{Checkpoint: ck, Fetch: st})
		fmt.Fprintln(stdout, string(b))
	} else {
		fmt.Fprintf(stdout, "wrote %s (step %d, root %s, %s)\n", ck.Path, ck.Step, ck.Root, humanBytes(ck.Size))
	}
	return 0
}
