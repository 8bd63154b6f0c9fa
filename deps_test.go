package ringmesh_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestImportDirection enforces the import direction of ARCHITECTURE.md:
// mesh, allreduce and checkpoint never import each other or node; nothing
// below cmd imports cmd.
func TestImportDirection(t *testing.T) {
	const mod = "github.com/ringmesh/ringmesh/"
	forbidden := map[string][]string{
		"mesh":       {"allreduce", "checkpoint", "node", "train", "cmd"},
		"allreduce":  {"mesh", "checkpoint", "node", "train", "cmd"},
		"checkpoint": {"mesh", "allreduce", "node", "train", "cmd"},
		"train":      {"mesh", "allreduce", "checkpoint", "cmd"},
		"node":       {"cmd"},
	}
	for pkg, bad := range forbidden {
		out, err := exec.Command("go", "list", "-deps", "./"+pkg+"/...").CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, b := range bad {
				if dep == mod+b || strings.HasPrefix(dep, mod+b+"/") {
					t.Errorf("%s imports %s", pkg, dep)
				}
			}
		}
	}
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
