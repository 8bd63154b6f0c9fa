// Package node is the composition root: it builds the libp2p host, wires mesh,
// allreduce and checkpoint together, turns the mesh view and the ring
// all-reduce into training rounds, and serves the local trainer API on
// DATA_DIR/ringmesh.sock.
package node
