// Package node is the composition root: it builds the mesh (libp2p host,
// membership), the all-reduce stream transport, the checkpoint store and its
// protocols and the round driver (node/roundrun), wires them to each other,
// and answers the local trainer API: node/apiserver serves it on
// DATA_DIR/ringmesh.sock and asks the node through its Backend interface,
// which api.go implements (the wire types, the status report among them,
// are node/localapi's; the Go client is node/client, which node does not
// import).
//
// Rounds (PROTOCOL.md section 2 has the protocol and its invariants). The
// protocol is the deterministic state machine of node/rounds, which
// node/roundrun drives from one goroutine with its streams, durable state
// and result buffer. node hands the driver its collaborators (rounds.go):
// the mesh's views turned into the machine's peers (members.go decodes
// the heartbeat payloads), the payload the machine's Info is published in
// beside the trainer's state hashes (statecheck.go), the all-reduce,
// metrics. The trainer's calls reach the driver through api.go, and
// codes.go is the one place where the driver's errors become local API
// error codes. The operator's re-form (reform.go) and the rule of which
// checkpoints count (history.go) read the driver's snapshot.
//
// Concurrency: every goroutine belongs to Run's errgroup (the driver,
// mesh, API server, checkpoints, metrics, state check and link prober each
// own theirs) or to an inbound stream set that shutdown resets, and every
// network wait has a deadline.
package node
