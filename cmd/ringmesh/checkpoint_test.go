package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/systest"
	"github.com/ringmesh/ringmesh/node/client"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// ckptCLI runs `ringmesh checkpoint args...` and returns its stdout, stderr
// and exit code.
func ckptCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, systest.Binary(t), append([]string{"checkpoint"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	}
	t.Fatalf("checkpoint %v: %v", args, err)
	return "", "", -1
}

// mustCLI runs the CLI and fails the test unless it exits 0.
func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := ckptCLI(t, args...)
	if code != 0 {
		t.Fatalf("checkpoint %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

// getJSON runs `checkpoint get --json` and decodes its result.
func getJSON(t *testing.T, args ...string) getResult {
	t.Helper()
	out := mustCLI(t, append([]string{"get", "--json"}, args...)...)
	var r getResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("get output %q: %v", out, err)
	}
	return r
}

// listOn returns the node's checkpoint list (and fetches in progress).
func listOn(dir string) (localapi.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, dir)
	if err != nil {
		return localapi.Response{}, err
	}
	defer c.Close()
	return c.Call(ctx, localapi.Request{Op: localapi.OpCheckpointList})
}

// infoOn returns what the node of dir knows of root.
func infoOn(dir, root string) (localapi.CheckpointInfo, error) {
	resp, err := listOn(dir)
	if err != nil {
		return localapi.CheckpointInfo{}, err
	}
	for _, ck := range resp.Checkpoints {
		if ck.Root == root {
			return ck, nil
		}
	}
	return localapi.CheckpointInfo{}, fmt.Errorf("%s: root %s not listed (%+v)", dir, root, resp.Checkpoints)
}

func writeRandomFile(t *testing.T, path string, size int) string {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// saveRoot runs `checkpoint save` and returns the root it prints.
func saveRoot(t *testing.T, dir string, step uint64, file string) string {
	t.Helper()
	out := mustCLI(t, "save", "--data-dir", dir, "--step", fmt.Sprint(step), file)
	var gotStep uint64
	var root, size, unit string
	if _, err := fmt.Sscanf(out, "saved step %d root %s size %s %s", &gotStep, &root, &size, &unit); err != nil || gotStep != step {
		t.Fatalf("save output %q: %v", out, err)
	}
	return root
}

// TestCheckpointSaveGetWriterDies saves on one node of four and waits until
// a replica holds it (R=2); the writer is then SIGKILLed and two other nodes
// get it (--latest, then --root) byte-identical from what is left. Unknown
// roots and bad arguments fail plainly.
func TestCheckpointSaveGetWriterDies(t *testing.T) {
	root := t.TempDir()
	ps := systest.Cluster(t, root, 4)
	src := filepath.Join(root, "state.bin")
	want := writeRandomFile(t, src, 9<<20+12345)

	for _, p := range ps {
		systest.Eventually(t, 30*time.Second, func() error {
			st, err := systest.Status(p.Dir)
			if err == nil && len(st.Members) != len(ps) {
				err = fmt.Errorf("%s sees %d members", p.Dir, len(st.Members))
			}
			return err
		})
	}
	ckRoot := saveRoot(t, ps[0].Dir, 42, src)
	var replica, others []*systest.Proc
	systest.Eventually(t, 60*time.Second, func() error {
		replica, others = nil, nil
		for _, p := range ps[1:] {
			ck, err := infoOn(p.Dir, ckRoot)
			if err != nil {
				return err
			}
			if ck.Local {
				replica = append(replica, p)
			} else {
				others = append(others, p)
			}
			if !ck.Local && len(ck.Providers) < 2 {
				return fmt.Errorf("%s sees %d providers, want writer and replica", p.Dir, len(ck.Providers))
			}
		}
		if len(replica) < 1 || len(others) < 1 {
			return fmt.Errorf("%d replicas, %d non-holders; want both (R=2 of 4 nodes)", len(replica), len(others))
		}
		return nil
	})
	ps[0].Kill()

	out := filepath.Join(root, "got-latest.bin")
	r := getJSON(t, "--data-dir", others[0].Dir, "--latest", "-o", out)
	if got := fileSHA(t, out); got != want {
		t.Fatalf("get --latest after the writer died: sha256 %s, want %s", got, want)
	}
	if r.Checkpoint.Root != ckRoot || r.Checkpoint.Step != 42 || r.Fetch.Local || r.Fetch.ChunksFetched != r.Fetch.Chunks {
		t.Fatalf("get --latest = %+v; want root %s step 42 fetched whole", r, ckRoot)
	}
	for _, p := range r.Fetch.Providers {
		if p == ps[0].ID {
			t.Fatalf("served by %v, including the dead writer", r.Fetch.Providers)
		}
	}

	// The last node: a replica exports its copy, a non-holder fetches it.
	last := ps[3]
	out2 := filepath.Join(root, "got-root.bin")
	getJSON(t, "--data-dir", last.Dir, "--root", ckRoot, "-o", out2)
	if got := fileSHA(t, out2); got != want {
		t.Fatalf("get --root: sha256 %s, want %s", got, want)
	}

	ls := mustCLI(t, "ls", "--data-dir", last.Dir)
	if !strings.Contains(ls, ckRoot) || !strings.Contains(ls, "yes") {
		t.Fatalf("ls after get does not list %s as local:\n%s", ckRoot, ls)
	}

	unknown := strings.Repeat("ab", 32)
	_, errOut, code := ckptCLI(t, "get", "--data-dir", last.Dir, "--root", unknown, "-o", filepath.Join(root, "x"))
	if code != 1 || !strings.Contains(errOut, "(not_found)") || !strings.Contains(errOut, unknown) {
		t.Fatalf("get unknown root: exit %d, stderr %q; want 1 and not_found", code, errOut)
	}
	_, errOut, code = ckptCLI(t, "get", "--data-dir", last.Dir, "-o", filepath.Join(root, "x"))
	if code != 2 || !strings.Contains(errOut, "--latest or --root") {
		t.Fatalf("get without root: exit %d, stderr %q; want 2 and usage", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(root, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed get left a file: %v", err)
	}
}

// TestCheckpointFetchResumes kills the fetching node mid-transfer (fetches
// rate limited) and restarts it: the fetch resumes and the chunks verified
// before the crash are not fetched again. With every provider dead, a node
// that knows the root answers unavailable.
func TestCheckpointFetchResumes(t *testing.T) {
	root := t.TempDir()
	args := []string{"--replicas", "1", "--fetch-rate", "16MiB"}
	ps := systest.Cluster(t, root, 3, args...)
	writer, fetcher, third := ps[0], ps[1], ps[2]
	src := filepath.Join(root, "big.bin")
	const size = 64 << 20
	want := writeRandomFile(t, src, size)
	ckRoot := saveRoot(t, writer.Dir, 7, src)
	for _, p := range []*systest.Proc{fetcher, third} {
		systest.Eventually(t, 30*time.Second, func() error {
			ck, err := infoOn(p.Dir, ckRoot)
			if err == nil && len(ck.Providers) != 1 {
				err = fmt.Errorf("%s sees providers %v", p.Dir, ck.Providers)
			}
			return err
		})
	}

	out := filepath.Join(root, "got.bin")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	get := exec.CommandContext(ctx, systest.Binary(t), "checkpoint", "get", "--data-dir", fetcher.Dir, "--root", ckRoot, "-o", out)
	var getErr bytes.Buffer
	get.Stderr = &getErr
	if err := get.Start(); err != nil {
		t.Fatal(err)
	}
	var before int64
	systest.Eventually(t, 60*time.Second, func() error {
		resp, err := listOn(fetcher.Dir)
		if err != nil {
			return err
		}
		for _, f := range resp.Fetches {
			if f.Root == ckRoot && f.Done >= size/4 {
				before = f.Done
				return nil
			}
		}
		return fmt.Errorf("fetch progress %+v", resp.Fetches)
	})
	fetcher.Kill()
	if err := get.Wait(); err == nil {
		t.Fatalf("get succeeded although its node was killed mid-fetch (%d of %d bytes were done)", before, size)
	}
	if before >= size {
		t.Fatalf("fetch finished (%d bytes) before the kill; the rate limit did not hold it", before)
	}

	fetcher = systest.Start(t, fetcher.Dir, append([]string{"--join", writer.Addr}, args...)...)
	systest.Eventually(t, 30*time.Second, func() error {
		ck, err := infoOn(fetcher.Dir, ckRoot)
		if err == nil && len(ck.Providers) != 1 {
			err = fmt.Errorf("restarted fetcher sees providers %v", ck.Providers)
		}
		return err
	})
	r := getJSON(t, "--data-dir", fetcher.Dir, "--root", ckRoot, "-o", out)
	if got := fileSHA(t, out); got != want {
		t.Fatalf("resumed fetch: sha256 %s, want %s", got, want)
	}
	const chunk = 4 << 20
	if min := int(before / chunk); r.Fetch.ChunksResumed < min || r.Fetch.ChunksResumed >= r.Fetch.Chunks ||
		r.Fetch.ChunksResumed+r.Fetch.ChunksFetched != r.Fetch.Chunks || r.Fetch.Fetched >= size {
		t.Fatalf("resumed fetch stats %+v; want >= %d chunks resumed (%d bytes were verified before the kill), the rest fetched",
			r.Fetch, min, before)
	}

	// Every provider gone: the third node knows the root but nobody holds it.
	writer.Kill()
	fetcher.Kill()
	systest.Eventually(t, 30*time.Second, func() error {
		ck, err := infoOn(third.Dir, ckRoot)
		if err == nil && len(ck.Providers) != 0 {
			err = fmt.Errorf("providers %v still listed", ck.Providers)
		}
		return err
	})
	_, errOut, code := ckptCLI(t, "get", "--data-dir", third.Dir, "--root", ckRoot, "-o", filepath.Join(root, "none"))
	if code != 1 || !strings.Contains(errOut, "(unavailable)") {
		t.Fatalf("get with no provider: exit %d, stderr %q; want 1 and unavailable", code, errOut)
	}
	_, errOut, code = ckptCLI(t, "get", "--data-dir", third.Dir, "--latest", "-o", filepath.Join(root, "none"))
	if code != 1 || !strings.Contains(errOut, "(not_found)") {
		t.Fatalf("get --latest with no provider: exit %d, stderr %q; want 1 and not_found", code, errOut)
	}
}

// stateAt is what the test trainers save as their state at step.
func stateAt(step uint64) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("state at step %d;", step)), 20000)
}

// TestJoinWithCheckpoint: a trainer joins a running mesh asking for state;
// the member told SaveCheckpoint saves its state for the entry step, and the
// joiner's node fetches it and hands it over with the join answer.
func TestJoinWithCheckpoint(t *testing.T) {
	root := t.TempDir()
	dumpLogsOnFailure(t, root)
	ps := systest.Cluster(t, root, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	saved := startSaving(t, ctx, ps[0].Dir)

	// Join a running mesh, not a formation at step 0.
	systest.Eventually(t, 60*time.Second, func() error {
		st, err := systest.Status(ps[0].Dir)
		if err == nil && st.Rounds.Applied < 2 {
			err = fmt.Errorf("member applied %d rounds", st.Rounds.Applied)
		}
		return err
	})
	c, err := client.Dial(ctx, ps[1].Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, _ := joinWithState(t, ctx, c)
	ck := resp.Checkpoint
	select {
	case s := <-saved:
		if s != ck.Step {
			t.Fatalf("member saved step %d, joiner got step %d", s, ck.Step)
		}
	default:
		t.Fatal("joiner got a checkpoint the member trainer never saved")
	}
	buf, err := c.NewBuffer(ctx, 256)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	ar, err := buf.AllReduce(ctx, resp.Step, client.ReduceOptions{Reduce: "mean"})
	if err != nil || ar.Step != resp.Step || ar.MemberCount != 2 {
		t.Fatalf("first all-reduce after joining: %+v, %v; want step %d with 2 members", ar, err, resp.Step)
	}
}

// startSaving runs saveOnJoin on dir until the test ends; it returns the
// channel of the steps saved.
func startSaving(t *testing.T, ctx context.Context, dir string) <-chan uint64 {
	trainerCtx, stopTrainer := context.WithCancel(ctx)
	saved := make(chan uint64, 16)
	done := make(chan error, 1)
	go func() { done <- saveOnJoin(trainerCtx, dir, saved) }()
	t.Cleanup(func() {
		stopTrainer()
		if err := <-done; err != nil && trainerCtx.Err() == nil {
			t.Errorf("member trainer: %v", err)
		}
	})
	return saved
}

// saveOnJoin is a member trainer: it all-reduces step after step and saves
// its state whenever the node says SaveCheckpoint, reporting the step saved.
func saveOnJoin(ctx context.Context, dir string, saved chan<- uint64) error {
	c, err := client.Dial(ctx, dir)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.Join(ctx, 0)
	if err != nil {
		return err
	}
	buf, err := c.NewBuffer(ctx, 256)
	if err != nil {
		return err
	}
	defer buf.Close()
	step := resp.Step
	for ctx.Err() == nil {
		resp, err := buf.AllReduce(ctx, step, client.ReduceOptions{Reduce: "mean"})
		if err != nil {
			return fmt.Errorf("all-reduce step %d: %w", step, err)
		}
		step = resp.NextStep
		if resp.SaveCheckpoint {
			path := filepath.Join(dir, fmt.Sprintf("state-%d", step))
			if err := os.WriteFile(path, stateAt(step), 0o600); err != nil {
				return err
			}
			if _, err := c.Call(ctx, localapi.Request{Op: localapi.OpCheckpointSave, Path: path, Step: step}); err != nil {
				return err
			}
			select {
			case saved <- step:
			default:
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// joinWithState joins c's trainer asking for state and checks what it
// gets: the checkpoint of the entry step, holding stateAt that step.
func joinWithState(t *testing.T, ctx context.Context, c *client.Client) (localapi.Response, []byte) {
	t.Helper()
	var resp localapi.Response
	var err error
	for {
		resp, err = c.Call(ctx, localapi.Request{Op: localapi.OpJoin, WantCheckpoint: true, TimeoutMS: 20000})
		if err == nil || !client.IsCode(err, localapi.CodeTimeout) {
			break
		}
	}
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	ck := resp.Checkpoint
	if ck == nil || ck.Step != resp.Step || resp.Step == 0 {
		t.Fatalf("join = step %d checkpoint %+v; want the checkpoint of the entry step", resp.Step, ck)
	}
	got, err := os.ReadFile(ck.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, stateAt(ck.Step)) {
		t.Fatalf("join checkpoint %s holds %.40q..., want the state at step %d", ck.Path, got, ck.Step)
	}
	return resp, got
}
