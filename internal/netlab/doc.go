// Package netlab is the "Lab" test tier of ARCHITECTURE.md: a throw-away
// network of Linux network namespaces that other packages' tests use as
// separate hosts.
//
// It owns the lab's life cycle and nothing else: a bridge in its own
// namespace, n host namespaces each joined to the bridge by a veth pair with
// an address 10.213.0.<i+1>/24 (configurable), loopback up and a default
// route on the veth so that multicast (mDNS) crosses the bridge; commands run
// inside a host (ip netns exec) or Go code run on a thread moved into it
// (setns); link shaping with tc tbf; and partitions with an nftables set per
// host namespace whose members' packets that host drops on input (so a cut is
// silent both ways, as with a pulled cable, and multicast is cut too).
// Everything is removed by t.Cleanup, also when the test fails, and labs left
// by a crashed test process are removed by the next New.
//
// Naming: a lab's namespaces are "<prefix>-<pid>-<rand>-br" and
// "<prefix>-<pid>-<rand>-h<i>", where pid is the creating process; the
// interfaces are "eth0" in each host and "p<i>" (ports of "br0") in the bridge
// namespace, so nothing is created in the root namespace.
//
// Needs root, iproute2 (ip, tc) and nftables (nft); Require skips a test with
// a clear message where they are missing. On Debian:
// apt-get install -y iproute2 nftables.
package netlab
