// Package node is the composition root: it builds the mesh (libp2p host,
// membership), the all-reduce stream transport, the checkpoint store and its
// protocols, turns the mesh view and the ring all-reduce into training
// rounds, and serves the local trainer API on DATA_DIR/ringmesh.sock
// (node/localapi; the Go client is node/client).
//
// Rounds (PROTOCOL.md section 2 has the whole protocol and every failure
// point). A training step k is a round over a ring: the members of the
// agreed list L_k that the mesh view shows alive, with the same boot
// incarnation, and not idle. A node trains only while its ring is a strict
// majority of L_k (less the members seen idle); otherwise it waits. An
// attempt all-reduces the trainer's buffer into a scratch buffer; every
// member that holds the result sends ready to the leader (the ring's lowest
// peer ID); the leader, holding every ready, commits with the next list
// (the ring plus admitted joiners) and tells everyone; members apply on
// commit. A member whose commit does not come recovers by asking every live
// member: an applied round is adopted, a round every member holds is
// applied, otherwise the round is retried; answering "no result" fences an
// attempt so that it can never be committed afterwards. Forming a new mesh
// and joining a running one are in join.go.
//
// Concurrency: the round state lives in engine under one mutex that guards
// leaf data and is never held across I/O; waiters sleep on a channel closed
// at every change. Every goroutine belongs to Run's errgroup or to the
// node's round wait group, and every network wait has a deadline.
package node
