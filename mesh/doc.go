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
// HeartbeatInterval. Heartbeats are signed by their sender, and only a
// member's own heartbeat (or its own leave) raises its incarnation in
// anyone's view.
//
// Failure detection is SWIM with memberlist's Lifeguard suspicion. A member
// is checked when its last connection closes or another package calls
// Suspect: it is pinged directly (libp2p ping, ProbeTimeout) and, if that
// fails, up to 3 other alive members chosen at random are asked to ping it
// (the probe protocol below; 2 ProbeTimeouts in all). If any of them reaches
// it, or it heartbeats meanwhile, nothing happens: one broken link between
// two members makes neither suspect. Otherwise, and when a member has not
// been heard for SuspectTimeout (heartbeats travel by gossip, around any one
// broken link, so silence is evidence too), this node votes against the
// member's current incarnation: the member becomes suspect in its view, a
// suspect notice is published on "ringmesh/<mesh>/failure/1", and the
// member is probed (helpers that try and fail vote too).
//
// A vote is one member that could not reach the subject: this node, a helper
// that answered "not reached", or the author of a suspect or dead notice
// (one vote per live member, however many notices it sends). A notice is
// only a vote: it makes this node probe the subject itself, and never by
// itself makes the subject suspect or dead here, so no single member can
// make the others drop a member they still reach. A suspicion holding this
// node's own vote declares the member dead, and publishes a dead notice,
// after DeadTimeout; each further independent vote shortens that on a log
// scale, down to max(HeartbeatInterval, DeadTimeout/4) once 3 more members
// (every other member, in a mesh of 5 or fewer) agree. Any heartbeat at the
// suspected incarnation or above clears every vote against it.
//
// Incarnations order everything: a notice about incarnation i never affects
// incarnation > i; only a heartbeat with a higher incarnation revives a dead
// or left member; a member that sees a notice about itself refutes it by
// raising its incarnation to max(own, notice)+1 (memory and disk) and
// heartbeating at once; a member heard heartbeating at an incarnation
// already declared dead is told so again (at most once per DeadTimeout) so
// it can refute. A notice at incarnation 2^64-1, or more than 2^20 above the
// subject's known incarnation (our own, for a notice about us), is
// implausible: it is dropped and counted, so no notice can make a member
// refute by wrapping to 0, nor push it up by more than 2^20. Every start bumps the stored
// incarnation, so a restarted node is always newer. Dead and left members
// stay in the view for ForgetAfter. Heartbeats carry listen addresses; a
// node dials every member it hears of but is not connected to (peer
// exchange), so joining through one member reaches all.
//
// # Wire format
//
// Heartbeats and failure notices are gossipsub payloads, signed by their
// author (StrictSign) and checked by topic validators before anyone acts on
// them: at most Config.MaxMessageSize bytes, decodes, mesh name matches,
// sender field == pubsub author, payload <= Config.MaxPayload, author on the
// allow list (if any), a heartbeat only alive or left, a leave only about
// its own sender, a suspect or dead notice never about its own sender, a
// notice's incarnation below 2^64-1. A failing message is rejected
// (gossipsub drops it and penalises the relaying peer), counted with
// Metrics.InvalidMessage and logged at Warn. The membership table then
// drops, and counts, a notice more than 2^20 above the subject's known
// incarnation.
//
// Indirect probes use the libp2p stream protocol "/ringmesh/probe/1": the
// requester (the stream's authenticated peer) writes one probe request and
// closes its side; the helper pings the target within ProbeTimeout and
// writes one probe reply. A helper answers only a live member of its view,
// about another member of its view; a request that is malformed, for
// another mesh, or about the requester or the helper itself is dropped
// (stream reset) and counted. Each side gives up after 2 ProbeTimeouts; a
// helper serves at most 64 requests at once.
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
//	  u8  kind                  (2 suspect, 3 dead, 4 left; left only with subject == sender,
//	                             suspect and dead only with subject != sender)
//	  str8 subject peer ID bytes (<= 64)
//	  u64 subject incarnation   (< 2^64-1)
//
//	probe request (type 3, requester to helper):
//	  u8  version = 1
//	  u8  type = 3
//	  str8 mesh name            (<= 64)
//	  str8 target peer ID bytes (<= 64)
//
//	probe reply (type 4, helper to requester):
//	  u8  version = 1
//	  u8  type = 4
//	  u8  result                (1 reached, 2 not reached)
//
// # Files in DataDir
//
// identity.key is the libp2p-marshalled Ed25519 private key (mode 0600);
// incarnation is the last incarnation as decimal text. Both are written
// atomically (temp file, fsync, rename).
package mesh
