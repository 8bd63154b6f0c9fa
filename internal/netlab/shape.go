package netlab

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrUnsupported is returned (wrapped) by SetDelay when the kernel has no
// netem qdisc.
var ErrUnsupported = errors.New("netlab: not supported by this kernel")

// SetRate limits host i's egress to bitsPerSec with a token bucket (tc tbf);
// 0 removes the limit. Traffic to host i is not shaped; shape the sender.
// Burst is 10 ms of traffic (at least 16 KiB) and the queue holds up to
// 100 ms, so TCP sees a steady rate rather than drops. It replaces any
// earlier SetRate or SetDelay on host i.
func (l *Lab) SetRate(i int, bitsPerSec int64) {
	l.t.Helper()
	l.checkIndex(i)
	if bitsPerSec < 0 {
		l.t.Fatalf("netlab: negative rate %d", bitsPerSec)
	}
	h := l.hosts[i]
	l.shape(h.Netns, h.Iface, bitsPerSec)
}

// SetIngressRate limits the traffic towards host i (the egress of its
// bridge port) like SetRate; 0 removes the limit. With both, a host's link
// is slow both ways.
func (l *Lab) SetIngressRate(i int, bitsPerSec int64) {
	l.t.Helper()
	l.checkIndex(i)
	if bitsPerSec < 0 {
		l.t.Fatalf("netlab: negative rate %d", bitsPerSec)
	}
	l.shape(l.bridge, fmt.Sprintf("p%d", i), bitsPerSec)
}

// tbfBurst is the bucket size SetRate uses for a rate, in bytes.
func tbfBurst(bitsPerSec int64) int64 { return max(bitsPerSec/8/100, 16<<10) }

// shape puts a tbf on dev in netns, or removes the root qdisc for 0.
func (l *Lab) shape(netns, dev string, bitsPerSec int64) {
	l.t.Helper()
	if bitsPerSec == 0 {
		_ = runTool("tc", "-n", netns, "qdisc", "del", "dev", dev, "root")
		return
	}
	err := runTool("tc", "-n", netns, "qdisc", "replace", "dev", dev, "root", "tbf",
		"rate", strconv.FormatInt(bitsPerSec, 10)+"bit",
		"burst", strconv.FormatInt(tbfBurst(bitsPerSec), 10),
		"latency", "100ms")
	if err != nil {
		l.t.Fatalf("netlab: %v", err)
	}
}

// SetDelay adds d of delay to host i's egress with netem, or removes it for
// d == 0. It returns an error wrapping ErrUnsupported where the kernel has no
// netem (as on the machine this was written on); the test decides whether it
// needs it. It replaces any earlier SetRate or SetDelay on host i.
func (l *Lab) SetDelay(i int, d time.Duration) error {
	l.t.Helper()
	l.checkIndex(i)
	h := l.hosts[i]
	if d <= 0 {
		l.shape(h.Netns, h.Iface, 0)
		return nil
	}
	usec := strconv.FormatInt(d.Microseconds(), 10) + "us"
	err := runTool("tc", "-n", h.Netns, "qdisc", "replace", "dev", h.Iface, "root", "netem", "delay", usec)
	if err != nil && strings.Contains(err.Error(), "unknown") {
		return fmt.Errorf("%w: netem: %w", ErrUnsupported, err)
	}
	if err != nil {
		l.t.Fatalf("netlab: %v", err)
	}
	return nil
}
