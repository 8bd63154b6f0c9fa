// Package mesh owns a node's place in the mesh: the libp2p host (identity,
// transports, private network, connection gater, resource limits), peer
// discovery (join addresses, peer exchange through heartbeats, mDNS, DHT),
// membership from signed heartbeats, SWIM-like failure detection with
// gossiped failure notices, and the host's capabilities (GPUs through NVML,
// CPU cores, RAM). It carries topics and streams for the other packages but
// knows nothing of gradients or checkpoints.
//
// # Lifecycle
//
// Open does I/O on purpose, unlike the project's "New does no I/O" rule: it
// loads or creates the identity, bumps the incarnation on disk, and builds a
// listening host and gossipsub, because later packages must register stream
// handlers (Host) and join topics (PubSub) before Run starts gossiping. Open
// starts no membership goroutine. Run owns every goroutine of the protocol
// and, when its ctx ends, publishes a graceful leave and returns after they
// all exit. Close releases what Open made; Close without a prior Run ending
// looks like a crash to the other members.
//
// # Membership
//
// Every member publishes a heartbeat on "ringmesh/<mesh>/heartbeat/1" every
// HeartbeatInterval. A member not heard for SuspectTimeout, or whose last
// connection closed, or named by Suspect, becomes suspect: a suspect notice
// is published on "ringmesh/<mesh>/failure/1" and the member is pinged
// directly (libp2p ping, ProbeTimeout). A failed probe, or DeadTimeout of
// suspicion without a heartbeat, declares it dead and a dead notice is
// published so every member agrees. Incarnations order everything: a notice
// about incarnation i never affects incarnation > i; only a heartbeat with a
// higher incarnation revives a dead or left member; a member that sees a
// notice about itself refutes it by raising its incarnation (memory and
// disk) and heartbeating at once; a member heard heartbeating at an
// incarnation already declared dead is told so again (at most once per
// DeadTimeout) so it can refute. Every start bumps the stored incarnation,
// so a restarted node is always newer. Dead and left members stay in the
// view for ForgetAfter. Heartbeats carry listen addresses; a node dials every
// member it hears of but is not connected to (peer exchange), so joining
// through one member reaches all.
//
// # Wire format
//
// Both messages are gossipsub payloads, signed by their author (StrictSign)
// and checked by topic validators before anyone acts on them: at most
// Config.MaxMessageSize bytes, decodes, mesh name matches, sender field ==
// pubsub author, payload <= Config.MaxPayload, author on the allow list (if
// any), a leave only about its own sender. A failing message is rejected
// (gossipsub drops it and penalises the relaying peer), counted with
// Metrics.InvalidMessage and logged at Warn.
//
// Integers are big-endian. str8 is a u8 length (1..limit) and that many
// bytes; lengths are checked against their limit before anything is
// allocated, and trailing bytes are an error. Message types and state values
// are append-only.
//
//	heartbeat (type 1):
//	  u8  version = 1
//	  u8  type = 1
//	  str8 mesh name            (<= 64)
//	  str8 sender peer ID bytes (<= 64)
//	  u64 incarnation
//	  u8  state                 (1 alive, 2 suspect, 3 dead, 4 left)
//	  u8  address count         (<= 16)
//	    str8 multiaddr bytes    (<= 128) per address
//	  u16 CPU cores
//	  u64 RAM bytes
//	  u8  GPU count             (<= 16)
//	    str8 name (<= 96), str8 UUID (<= 96), u64 memory bytes, u8 utilisation % (<= 100)
//	  u32 payload length        (<= 65536, and <= Config.MaxPayload to be valid)
//	  payload bytes
//
//	failure notice (type 2):
//	  u8  version = 1
//	  u8  type = 2
//	  str8 mesh name            (<= 64)
//	  str8 sender peer ID bytes (<= 64)
//	  u8  kind                  (2 suspect, 3 dead, 4 left; left only with subject == sender)
//	  str8 subject peer ID bytes (<= 64)
//	  u64 subject incarnation
//
// # Files in DataDir
//
// identity.key is the libp2p-marshalled Ed25519 private key (mode 0600);
// incarnation is the last incarnation as decimal text. Both are written
// atomically (temp file, fsync, rename).
package mesh
