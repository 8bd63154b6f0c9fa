package demo

import "github.com/ringmesh/ringmesh/internal/nodeproc"

// nodeArgs are the flags of every demo node: loopback only, no mDNS or
// DHT, fast failure detection.
var nodeArgs = []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht", "--fast-detect", "--log-level", "info"}

// startNode starts `bin node --data-dir dir` with nodeArgs and args (own
// credentials, tied to the demo's life) and waits until its control socket
// answers.
func startNode(bin, dir string, args ...string) (*nodeproc.Proc, error) {
	return nodeproc.StartTied(bin, dir, append(append([]string{}, nodeArgs...), args...)...)
}
