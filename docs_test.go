package ringmesh_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeListsEveryMetric: every Prometheus series the node, mesh,
// all-reduce and checkpoint packages define is named in full in the
// README's metrics table, so the table cannot fall behind the code.
func TestReadmeListsEveryMetric(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`"(ringmesh_[a-z0-9_]+)"`)
	seen := 0
	for _, dir := range []string{"node", "mesh", "allreduce", "checkpoint"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range name.FindAllSubmatch(src, -1) {
				seen++
				if !strings.Contains(string(readme), "`"+string(m[1])+"`") && !strings.Contains(string(readme), "`"+string(m[1])+"{") {
					t.Errorf("%s defines %s, which README.md's metrics table does not name", f, m[1])
				}
			}
		}
	}
	if seen < 30 {
		t.Errorf("found only %d metric names in the sources: has the way they are defined changed?", seen)
	}
}
