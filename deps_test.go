package ringmesh_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestImportDirection enforces the import direction of ARCHITECTURE.md:
// mesh, allreduce and checkpoint never import each other or node; nothing
// below cmd imports cmd. The round driver (node/roundrun) is handed its
// collaborators and never reaches back into the node that composes it or
// its local API; the round machine (node/rounds) knows no driver.
func TestImportDirection(t *testing.T) {
	const mod = "github.com/ringmesh/ringmesh/"
	// A tree each: pkg/... must not import these packages or any below them.
	forbidden := map[string][]string{
		"mesh":          {"allreduce", "checkpoint", "node", "train", "cmd"},
		"allreduce":     {"mesh", "checkpoint", "node", "train", "cmd"},
		"checkpoint":    {"mesh", "allreduce", "node", "train", "cmd"},
		"train":         {"mesh", "allreduce", "checkpoint", "cmd"},
		"node":          {"cmd"},
		"node/roundrun": {"node/client", "node/apiserver", "node/localapi", "checkpoint", "train", "cmd"},
		"node/rounds":   {"node/roundrun", "mesh", "allreduce", "checkpoint", "train", "cmd"},
	}
	// These packages alone, not the trees below them (node/roundrun
	// imports node/rounds, not node).
	exactly := map[string][]string{
		"node/roundrun": {"node"},
	}
	for pkg, bad := range forbidden {
		for _, dep := range deps(t, "./"+pkg+"/...") {
			for _, b := range bad {
				if dep == mod+b || strings.HasPrefix(dep, mod+b+"/") {
					t.Errorf("%s imports %s", pkg, dep)
				}
			}
		}
	}
	for pkg, bad := range exactly {
		for _, dep := range deps(t, "./"+pkg+"/...") {
			for _, b := range bad {
				if dep == mod+b {
					t.Errorf("%s imports %s", pkg, dep)
				}
			}
		}
	}
}

// deps lists the packages that pattern's packages import, directly or not.
func deps(t *testing.T, pattern string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pattern).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", pattern, err, out)
	}
	return strings.Fields(string(out))
}

// TestLocalAPISides: the node and the programs that talk to it meet in
// node/localapi, the API's types. node answers the API and never calls it
// (no node/client); internal/nodeproc starts node processes and asks them
// over the socket, so it does not link the node package it launches.
// Unlike TestImportDirection, these name one package each, not a tree:
// node/credentials, say, is fine in nodeproc.
func TestLocalAPISides(t *testing.T) {
	const mod = "github.com/ringmesh/ringmesh/"
	for _, c := range []struct{ pkg, bad string }{
		{"node", "node/client"},
		{"internal/nodeproc", "node"},
	} {
		out, err := exec.Command("go", "list", "-deps", "./"+c.pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", c.pkg, err, out)
		}
		if slices.Contains(strings.Fields(string(out)), mod+c.bad) {
			t.Errorf("%s imports %s", c.pkg, mod+c.bad)
		}
	}
}

// TestBinaryLinksNoTestHarness: the shipped binary does not link the
// system-test harness or the namespace lab (they are for tests only).
func TestBinaryLinksNoTestHarness(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./cmd/ringmesh").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/ringmesh/ringmesh/internal/systest" || dep == "github.com/ringmesh/ringmesh/internal/netlab" {
			t.Errorf("cmd/ringmesh links %s", dep)
		}
	}
}
