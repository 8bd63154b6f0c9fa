// Package node is the composition root: it builds the mesh (libp2p host,
// membership), the all-reduce stream transport, the checkpoint store and its
// protocols, drives the round protocol (node/rounds), and answers the local
// trainer API: node/apiserver serves it on DATA_DIR/ringmesh.sock and asks
// the node through its Backend interface, which api.go implements (the
// wire types, the status report among them, are node/localapi's; the Go
// client is node/client, which node does not import).
//
// Rounds (PROTOCOL.md section 2 has the protocol and its invariants). The
// protocol is the deterministic state machine of node/rounds; node owns one
// and feeds it from one goroutine (driver.run): round messages from peers
// (/ringmesh/round/3, one stream per peer and direction, roundnet.go),
// membership views, the trainer's join, submit and leave, all-reduce
// outcomes and ticks. It performs the machine's effects in order: it
// persists the machine's durable state (DATA_DIR/rounds.state.0 and .1,
// written in turn, fdatasynced; state.go) before any message that depends
// on it is sent, sends messages through a bounded queue per peer, runs
// the all-reduce of the trainer's buffer into a result buffer (a shared
// mapping of a file that outlives the process, so a result reported ready
// survives a crash: /dev/shm/ringmesh-HASH-result.f32 where /dev/shm is a
// tmpfs with room, else DATA_DIR/result.f32; result.go),
// applies decided results to the trainer's buffer, answers the trainer and
// publishes the heartbeat payload.
//
// Concurrency: the machine has no lock; only the driver goroutine touches
// it. Trainer calls reach it as closures run on that goroutine. Every
// goroutine belongs to Run's errgroup, the driver (its all-reduce and
// senders) or the inbound stream set that shutdown resets, and every
// network wait has a deadline.
package node
