package checkpoint

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestRunIDRoundTrip: a run ID given to Put is in the manifest (and so the
// root), survives a reopen, is announced, reaches another node's catalog
// and its fetched copy, and selects with ListRun.
func TestRunIDRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	bus := &memBus{}
	dir := t.TempDir()
	a, b := newNodeIn(t, dir, newHost(t)), newNode(t)
	link(a.h, b.h)
	ca, cb := newCatalog(t, a, bus.join(a.h.ID())), newCatalog(t, b, bus.join(b.h.ID()))
	runBG(t, ca.Run)
	runBG(t, cb.Run)
	src, _ := writeRandom(t, 3*64<<10+1, 8)
	m, withRun, err := a.store.PutWithOptions(ctx, src, 7, PutOptions{RunID: "run-A"})
	if err != nil {
		t.Fatal(err)
	}
	if m.RunID != "run-A" {
		t.Fatalf("manifest run %q, want run-A", m.RunID)
	}
	_, without, err := a.store.Put(ctx, src, 7)
	if err != nil {
		t.Fatal(err)
	}
	if without == withRun {
		t.Fatal("the run ID is not part of the root")
	}
	if in, _ := a.store.Stat(withRun); in.RunID != "run-A" {
		t.Fatalf("Stat run %q, want run-A", in.RunID)
	}
	for _, r := range []Root{withRun, without} {
		if err := ca.Announce(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "b learns both", func() bool { return len(cb.Providers(withRun)) == 1 && len(cb.Providers(without)) == 1 })
	roots := func(ks []Known) []Root {
		var out []Root
		for _, k := range ks {
			out = append(out, k.Root)
		}
		return out
	}
	if got := cb.ListRun("run-A"); !slices.Equal(roots(got), []Root{withRun}) || got[0].RunID != "run-A" {
		t.Fatalf("ListRun(run-A) = %+v, want only the run's checkpoint", got)
	}
	if got := roots(cb.ListRun("")); !slices.Equal(got, []Root{without}) {
		t.Fatalf("ListRun(\"\") = %v, want only the checkpoint without a run", got)
	}
	if got := cb.ListRun("run-B"); len(got) != 0 {
		t.Fatalf("ListRun(run-B) = %+v, want nothing", got)
	}
	if got := len(cb.List()); got != 2 {
		t.Fatalf("List has %d entries, want both", got)
	}
	// The fetched copy carries the run from the manifest.
	if _, err := b.fetcher.Fetch(ctx, withRun, ids(a), nil); err != nil {
		t.Fatal(err)
	}
	if in, _ := b.store.Stat(withRun); !in.Complete || in.RunID != "run-A" {
		t.Fatalf("fetched copy %+v, want complete with run-A", in)
	}
	if got := roots(cb.ListRun("run-A")); !slices.Equal(got, []Root{withRun}) {
		t.Fatalf("ListRun(run-A) after the fetch = %v", got)
	}
	// And the store reads it back after a restart.
	a.stop()
	a.store.Close()
	s := openStore(t, dir, LocalStoreConfig())
	if in, ok := s.Stat(withRun); !ok || !in.Complete || in.RunID != "run-A" {
		t.Fatalf("after reopen: %+v, %v; want complete with run-A", in, ok)
	}
}

func TestRunIDValidation(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, t.TempDir(), LocalStoreConfig())
	src, _ := writeRandom(t, 100, 1)
	for _, bad := range []string{strings.Repeat("x", MaxRunIDLen+1), "has space", "tab\t", "é"} {
		if _, _, err := s.PutWithOptions(ctx, src, 1, PutOptions{RunID: bad}); err == nil {
			t.Errorf("PutWithOptions(run %q) accepted", bad)
		}
		if _, err := (Announcement{Step: 1, Root: Root{1}, Size: 1, Provider: testPeerID(t), RunID: bad}).Encode(); !errors.Is(err, ErrBadAnnouncement) {
			t.Errorf("Announcement with run %q: %v, want ErrBadAnnouncement", bad, err)
		}
	}
	if _, _, err := s.PutWithOptions(ctx, src, 1, PutOptions{RunID: strings.Repeat("x", MaxRunIDLen)}); err != nil {
		t.Errorf("run ID of %d bytes: %v", MaxRunIDLen, err)
	}
}

// TestCatalogRejectsConflictingRunID: the same root announced with another
// run is a lie about its manifest.
func TestCatalogRejectsConflictingRunID(t *testing.T) {
	c := catalogOnly(t, LocalCatalogConfig())
	honest, evil := testPeerID(t), testPeerID(t)
	good, _ := Announcement{Step: 1, Root: Root{1}, Size: 10, Provider: honest, RunID: "r1"}.Encode()
	if err := c.Handle(good, honest); err != nil {
		t.Fatal(err)
	}
	lie, _ := Announcement{Step: 1, Root: Root{1}, Size: 10, Provider: evil, RunID: "r2"}.Encode()
	if err := c.Handle(lie, evil); !errors.Is(err, ErrBadAnnouncement) {
		t.Fatalf("conflicting run: %v, want ErrBadAnnouncement", err)
	}
	if got := c.Providers(Root{1}); !slices.Equal(got, []peer.ID{honest}) {
		t.Fatalf("providers %v, want only the honest one", got)
	}
}

// TestManifestRunGolden pins the version 2 layout: the run ID (length
// byte, bytes) between the header and the chunk hashes.
func TestManifestRunGolden(t *testing.T) {
	m := Manifest{Step: 7, Size: 1500, ChunkSize: 1024, RunID: "ab", Chunks: []Hash{{0xaa}, {0xbb}}}
	got, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := "524d434d" + "02" + "0000000000000007" + "00000000000005dc" + "00000400" + "00000002" +
		"02" + "6162" + "aa" + zeros(31) + "bb" + zeros(31)
	if hex.EncodeToString(got) != want {
		t.Fatalf("Encode = %x, want %s", got, want)
	}
	back, err := DecodeManifest(got)
	if err != nil || back.RunID != "ab" || back.Step != 7 || back.Chunks[1] != (Hash{0xbb}) {
		t.Fatalf("DecodeManifest = %+v, %v", back, err)
	}
	good := bytes.Clone(got)
	runAt := manifestHeaderLen
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for name, b := range map[string][]byte{
		"run length 0":      mut(func(b []byte) []byte { b[runAt] = 0; return b }),
		"run length 65":     mut(func(b []byte) []byte { b[runAt] = MaxRunIDLen + 1; return b }),
		"run not printable": mut(func(b []byte) []byte { b[runAt+1] = ' '; return b }),
		"run truncated":     good[:runAt+2],
		"no run length":     good[:runAt],
		"trailing":          append(bytes.Clone(good), 0),
	} {
		if _, err := DecodeManifest(b); !errors.Is(err, ErrBadManifest) {
			t.Errorf("%s: %v, want ErrBadManifest", name, err)
		}
	}
}

// TestAnnouncementRunGolden pins the version 2 layout: the run ID appended
// after the provider.
func TestAnnouncementRunGolden(t *testing.T) {
	id, err := peer.Decode("12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf")
	if err != nil {
		t.Fatal(err)
	}
	a := Announcement{Step: 9, Root: Root{0xcd}, Size: 4096, Provider: id, RunID: "run-1"}
	got, err := a.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := "524d4341" + "02" + "0000000000000009" + "cd" + zeros(31) + "0000000000001000" + "0026" +
		hex.EncodeToString([]byte(id)) + "05" + hex.EncodeToString([]byte("run-1"))
	if hex.EncodeToString(got) != want {
		t.Fatalf("Encode = %x, want %s", got, want)
	}
	back, err := DecodeAnnouncement(got)
	if err != nil || back != a {
		t.Fatalf("DecodeAnnouncement = %+v, %v; want %+v", back, err, a)
	}
	runAt := announceHeaderLen + len(id)
	for name, b := range map[string][]byte{
		"run length 0":  append(bytes.Clone(got[:runAt]), 0),
		"run truncated": got[:len(got)-1],
		"no run":        got[:runAt],
		"trailing":      append(bytes.Clone(got), 'x'),
	} {
		if _, err := DecodeAnnouncement(b); !errors.Is(err, ErrBadAnnouncement) {
			t.Errorf("%s: %v, want ErrBadAnnouncement", name, err)
		}
	}
}

// TestOldFormatsStillRead: version 1 manifests and announcements (what
// every node wrote before run IDs) decode with no run ID and encode back
// byte for byte, a checkpoint put without a run is still written in
// version 1 (its root unchanged), and a store written that way opens.
func TestOldFormatsStillRead(t *testing.T) {
	v1m, _ := hex.DecodeString("524d434d" + "01" + "0000000000000007" + "00000000000005dc" + "00000400" + "00000002" +
		"aa" + zeros(31) + "bb" + zeros(31))
	m, err := DecodeManifest(v1m)
	if err != nil || m.RunID != "" || m.Step != 7 || len(m.Chunks) != 2 {
		t.Fatalf("v1 manifest: %+v, %v", m, err)
	}
	if again, _ := m.Encode(); !bytes.Equal(again, v1m) {
		t.Fatalf("v1 manifest re-encoded as %x, want the same bytes", again)
	}
	id, _ := peer.Decode("12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf")
	v1a, _ := hex.DecodeString("524d4341" + "01" + "0000000000000009" + "cd" + zeros(31) + "0000000000001000" + "0026" +
		hex.EncodeToString([]byte(id)))
	a, err := ValidateAnnouncement(v1a, id)
	if err != nil || a.RunID != "" || a.Step != 9 || a.Provider != id {
		t.Fatalf("v1 announcement: %+v, %v", a, err)
	}
	if again, _ := a.Encode(); !bytes.Equal(again, v1a) {
		t.Fatalf("v1 announcement re-encoded as %x, want the same bytes", again)
	}

	ctx := testCtx(t)
	dir := t.TempDir()
	s := openStore(t, dir, LocalStoreConfig())
	src, _ := writeRandom(t, 2*64<<10, 3)
	pm, root, err := s.Put(ctx, src, 5)
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, root.String(), manifestFile))
	if err != nil {
		t.Fatal(err)
	}
	if onDisk[4] != ManifestVersion {
		t.Fatalf("manifest without a run written as version %d, want %d", onDisk[4], ManifestVersion)
	}
	legacy := Manifest{Step: pm.Step, Size: pm.Size, ChunkSize: pm.ChunkSize, Chunks: pm.Chunks}
	if r, _ := legacy.Root(); r != root {
		t.Fatalf("root %s, want %s as before run IDs", root, r)
	}
	s.Close()
	s = openStore(t, dir, LocalStoreConfig())
	if in, ok := s.Stat(root); !ok || !in.Complete || in.RunID != "" {
		t.Fatalf("v1 checkpoint after reopen: %+v, %v", in, ok)
	}
}
