// Package roundrun runs a node's rounds: it owns the round protocol's
// state machine (node/rounds) and the one goroutine that drives it
// (Driver.Run), feeding it round messages from peers, membership views,
// the trainer's calls (Join, Submit, PartReady, Leave, and the operator's
// Reform), all-reduce outcomes and ticks, and performing its effects in
// order. It owns what those effects need: the round streams
// (/ringmesh/round/3, Protocol; one stream per peer and direction, a
// bounded queue and a sender goroutine per peer; streams.go, wire.go), the
// machine's durable state (DATA_DIR/rounds.state.0 and .1, written in
// turn and fdatasynced before any message that depends on it leaves;
// state.go), and the result buffer that the all-reduce writes into (a
// shared mapping of a file that outlives the process, so a result
// reported ready survives a crash: /dev/shm/ringmesh-HASH-result.f32 where
// /dev/shm is a tmpfs with room, else DATA_DIR/result.f32; result.go). It
// applies decided results to the trainer's buffer and answers the
// trainer's calls with typed results and errors (*Error names the
// machine's rounds.Reason; the local API's codes are node's business).
//
// Everything else is a collaborator in Deps: the libp2p host that carries
// the streams, the mesh's views and suspicions, the heartbeat payload the
// machine's Info is published in (its format is node's), the all-reduce,
// metrics and a logger. The package imports neither node nor its API.
//
// Concurrency: the machine has no lock; only Run's goroutine touches it.
// Calls reach it as closures run on that goroutine, and Snapshot reads
// the copy it publishes after every event. Run owns every goroutine it
// starts (the running all-reduce, the per-peer senders) and returns only
// after they exit; the inbound stream handlers belong to the host, and
// Close resets their streams and waits for them. Every network wait has a
// deadline.
package roundrun
