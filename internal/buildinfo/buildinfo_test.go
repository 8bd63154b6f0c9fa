package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

// TestStampedRevision: a revision stamped by make build wins over what go
// build recorded, in the version line and the agent string.
func TestStampedRevision(t *testing.T) {
	old := Revision
	defer func() { Revision = old }()
	Revision = "0123456789ab"
	if v, a := Version(), Agent(); !strings.Contains(v, "revision 0123456789ab") || !strings.HasPrefix(a, "ringmesh/") || !strings.HasSuffix(a, "+0123456789ab") {
		t.Errorf("with a stamped revision: version %q, agent %q", v, a)
	}
}

// TestRead: the module version, a 12-digit revision, the time and the
// dirty flag come from go build's settings.
func TestRead(t *testing.T) {
	b := build{version: "(devel)", revision: "unknown"}
	b.read(&debug.BuildInfo{Main: debug.Module{Version: "v0.3.0"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}, {Key: "vcs.time", Value: "2026-12-03T00:00:00Z"}}})
	if b.version != "v0.3.0" || b.revision != "0123456789ab" || !b.modified || b.time != "2026-12-03T00:00:00Z" {
		t.Errorf("read: %+v", b)
	}
}
