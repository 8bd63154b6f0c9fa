// Package buildinfo says which build of ringmesh this is: the module
// version and VCS revision that go build recorded (or make build stamped),
// for `ringmesh --version`, the node's first log line and the libp2p agent
// string peers see.
package buildinfo

import (
	"fmt"
	"runtime/debug"
)

// Revision is set by make build (-ldflags -X
// github.com/ringmesh/ringmesh/internal/buildinfo.Revision=...) where go
// build records no VCS information (-buildvcs=false, or no git).
var Revision string

// build is what go build recorded about this binary: the module version
// and the VCS revision ("(devel)" and "unknown" when it recorded none).
type build struct {
	version, revision, time string
	modified                bool
}

func readBuild() build {
	b := build{version: "(devel)", revision: "unknown"}
	if bi, ok := debug.ReadBuildInfo(); ok {
		b.read(bi)
	}
	if Revision != "" {
		b.revision, b.modified = Revision, false // make build's, "+dirty" included
	}
	return b
}

func (b *build) read(bi *debug.BuildInfo) {
	if bi.Main.Version != "" {
		b.version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.revision = s.Value
			if len(b.revision) > 12 {
				b.revision = b.revision[:12]
			}
		case "vcs.modified":
			b.modified = s.Value == "true"
		case "vcs.time":
			b.time = s.Value
		}
	}
}

// Version is what ringmesh --version prints.
func Version() string {
	b := readBuild()
	rev := b.revision
	if b.modified {
		rev += "+dirty"
	}
	out := fmt.Sprintf("ringmesh %s (revision %s", b.version, rev)
	if b.time != "" {
		out += ", " + b.time
	}
	return out + ")"
}

// Agent is the libp2p agent string, so peers see which build a node runs.
func Agent() string {
	b := readBuild()
	return "ringmesh/" + b.version + "+" + b.revision
}
