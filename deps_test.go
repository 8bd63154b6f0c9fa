package ringmesh_test

import (
	"os/exec"
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
