package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"

	"github.com/ringmesh/ringmesh/internal/cli"

	flag "github.com/spf13/pflag"

	"github.com/ringmesh/ringmesh/internal/buildinfo"
	"github.com/ringmesh/ringmesh/internal/units"
	"github.com/ringmesh/ringmesh/node"
)

const nodeHelp = `usage: ringmesh node --data-dir DIR [flags]

Runs a ringmesh node until SIGINT or SIGTERM, then leaves gracefully (the
mesh hears it leave) and exits 0. Trainers talk to it through the socket
DIR/ringmesh.sock.

A mesh is private from the first command: a fresh data dir gets a random
mesh secret (DIR/mesh.psk), and peers without it cannot connect at all (no
gossip, rounds, checkpoints or DHT). The first node needs no --join; on it,
'ringmesh token --data-dir DIR' prints a join token, and on every other host

  ringmesh node --data-dir DIR --join TOKEN

is all it takes (the token carries the mesh name, the secret and member
addresses; keep it as secret as a password). Once the data dir holds the
mesh's secret, --join also takes member addresses: /ip4/A/tcp/P/p2p/ID, or
plain /ip4/A/tcp/P and /dns4/HOST/tcp/P (the peer ID is learned by
handshake, which only a holder of the secret completes). --psk FILE uses a
secret file you distribute yourself.
--insecure-open-mesh runs without any secret: anyone who reaches the port
can join, read the model and add gradients.`

func cmdNode(args []string, stderr io.Writer) int {
	cfg := node.DefaultConfig()
	fs := cli.NewFlagSet("node", nodeHelp, stderr)
	var listen, join cli.Strings
	dataDir := fs.String("data-dir", "", "directory for the identity key, control socket and checkpoints (required)")
	fs.Var(&listen, "listen", "multiaddr to listen on (repeatable; default /ip4/0.0.0.0/tcp/4001, plus its QUIC twin /ip4/0.0.0.0/udp/4001/quic-v1 with --insecure-open-mesh: a private mesh is TCP only)")
	fs.Var(&join, "join", "join token from 'ringmesh token', or a member address: /ip4/A/tcp/P[/p2p/ID], /dns4/HOST/tcp/P (repeatable)")
	fs.StringVar(&cfg.Mesh.Mesh, "mesh", cfg.Mesh.Mesh, "mesh name: separates meshes on one network")
	noMDNS := fs.Bool("no-mdns", false, "disable mDNS discovery on the local network")
	noDHT := fs.Bool("no-dht", false, "disable DHT discovery")
	fs.StringVar(&cfg.Mesh.PSKFile, "psk", "", "mesh secret file (/key/swarm/psk/1.0.0/ format) instead of DIR/mesh.psk: only peers with the same secret connect")
	open := fs.Bool("insecure-open-mesh", false, "run without a mesh secret: ANY peer that reaches the port can join, read the model and add gradients")
	fs.StringVar(&cfg.Mesh.AllowFile, "allow", "", "file of allowed peer IDs, one per line: no other peer connects")
	fs.IntVar(&cfg.MinMembers, "min-members", cfg.MinMembers, "nodes that must be present to start a new mesh (set to the world size to start everyone at step 0)")
	fs.DurationVar(&cfg.Mesh.HeartbeatInterval, "heartbeat", cfg.Mesh.HeartbeatInterval, "heartbeat interval")
	fast := fs.Bool("fast-detect", false, "detect failures within about 1s (heartbeat 200ms) instead of the 5s defaults")
	fs.DurationVar(&cfg.TrainerTimeout, "trainer-timeout", cfg.TrainerTimeout, "exclude this node's trainer if it does not submit the next step within this (0: never)")
	fs.DurationVar(&cfg.CommitTimeout, "commit-timeout", cfg.CommitTimeout, "bound on each phase of a round's proposal (promises, accepts) before it is retried; the all-reduce phase is retried only after this long without progress (no bytes received), so long rounds of large models complete")
	fs.DurationVar(&cfg.FormWait, "form-wait", cfg.FormWait, "how long a node looks for a training mesh (with no new peer in view) before it may form one")
	fs.DurationVar(&cfg.FormTimeout, "form-timeout", cfg.FormTimeout, "give up a newly formed mesh that a majority of its list stops advertising for this long before its first step")
	fs.IntVar(&cfg.AllReduce.Lanes, "allreduce-lanes", cfg.AllReduce.Lanes, "parallel streams per all-reduce round, alternating ring directions (every member must use the same value)")
	chunk := units.Size(cfg.AllReduce.ChunkBytes)
	fs.Var(&chunk, "allreduce-chunk", "wire bytes per all-reduce frame, e.g. 1MiB: smaller starts the pipeline sooner, larger costs less per byte (every member must use the same value)")
	noDirect := fs.Bool("no-direct-lanes", false, "keep every all-reduce lane on its libp2p stream instead of its own TCP connection (for networks where only the libp2p port is reachable; a failed direct connection falls back by itself)")
	fs.BoolVar(&cfg.AllReduce.TrustedNetwork, "trusted-network", false, "send all-reduce lanes in PLAINTEXT on their own TCP connections, for isolated cluster fabrics (as gloo and NCCL do); lane connections are still authenticated over the encrypted mesh, the control plane, gossip and checkpoints stay encrypted; every member must agree")
	minDirect := units.Size(cfg.AllReduce.DirectMinBytes)
	fs.Var(&minDirect, "allreduce-direct-min", "smallest lane (its part of a buffer, in wire bytes) that gets its own TCP connection; smaller lanes stay on the libp2p stream")
	checkpointFlags(fs, &cfg.Checkpoint)
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text (key=value lines) or json (one object per line, for log collectors)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics (ringmesh_* and libp2p's) at http://ADDR/metrics, e.g. 127.0.0.1:9464 (port 0 picks one; status shows it)")
	fs.BoolVar(&cfg.NoLinkProbe, "no-link-probe", false, "do not probe link rates (8 MiB to each member every 5 minutes): rounds then run the classic ring with equal segments instead of one shaped by the members' links")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the node to FILE until it stops (for benchmarks)")
	if code := cli.Parse(fs, args); code >= 0 {
		return code
	}
	if *dataDir == "" {
		fmt.Fprintln(stderr, "ringmesh node: --data-dir is required (or RINGMESH_DATA_DIR)")
		return 2
	}
	cfg.DataDir = *dataDir
	cfg.Mesh.UserAgent = buildinfo.Agent()
	cfg.AllReduce.ChunkBytes = int(chunk)
	cfg.AllReduce.DirectMinBytes = int(minDirect)
	cfg.AllReduce.DirectLanes = !*noDirect
	if cfg.AllReduce.TrustedNetwork && *noDirect {
		fmt.Fprintln(stderr, "ringmesh node: --trusted-network needs direct lanes; drop --no-direct-lanes")
		return 2
	}
	if len(listen) > 0 {
		cfg.Mesh.Listen = listen
	}
	meshSet := false
	fs.Visit(func(f *flag.Flag) { meshSet = meshSet || f.Name == "mesh" })
	tok, err := node.ApplyJoin(&cfg, join, meshSet)
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh node: %v\n", err)
		return 2
	}
	cfg.Mesh.MDNS = !*noMDNS
	cfg.Mesh.DHT = !*noDHT
	if *fast {
		cfg.Mesh.FastDetect()
	}
	logger, err := node.NewLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh node: %v\n", err)
		return 2
	}
	node.RouteLibraryLogs(logger)

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "ringmesh node: --cpuprofile: %v\n", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			fmt.Fprintf(stderr, "ringmesh node: --cpuprofile: %v\n", err)
			return 1
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}

	ctx, stop := signalContext()
	defer stop()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		fmt.Fprintf(stderr, "ringmesh node: %v\n", err)
		return 1
	}
	// The data dir lock first: a second node on it must stop before it
	// writes a secret, opens libp2p with the first one's identity or bumps
	// its incarnation.
	lock, err := node.LockDataDir(cfg.DataDir)
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh node: %v\n", err)
		return 1
	}
	defer lock.Close()
	cfg.Lock = lock
	secretDone, err := node.SetupSecret(&cfg, tok, *open, logger)
	if err != nil {
		fmt.Fprintf(stderr, "ringmesh node: %v\n", err)
		return 2
	}
	n, err := node.Open(ctx, cfg, logger)
	if err != nil {
		secretDone(false)
		fmt.Fprintf(stderr, "ringmesh node: %v\n", err)
		return 1
	}
	secretDone(true)
	st := n.Status()
	logger.Info("node started", "version", buildinfo.Version(), "id", st.Self.ID, "mesh", st.Mesh, "private", st.Private, "addrs", st.Self.Addrs,
		"socket", cfg.DataDir+"/ringmesh.sock", "metrics", node.MetricsURL(st.MetricsAddr))
	if err := n.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "ringmesh node: %v\n", err)
		return 1
	}
	logger.Info("node stopped")
	return 0
}
