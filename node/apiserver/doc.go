// Package apiserver serves the local trainer API (node/localapi, PROTOCOL.md
// section 1) on a node's control socket, DATA_DIR/ringmesh.sock, over a
// Backend: the node.
//
// It owns what belongs to the socket and its connections: binding the
// socket (and refusing a data dir whose socket answers), one goroutine per
// connection reading frames and answering each in order, a connection's
// registered buffers (sealed memfds mapped into the node) and its pending
// all-reduce in parts, the one-trainer-per-node rule, and the checks of a
// call's arguments (buffer ranges, parts, dtype, wire, reduce op, weight,
// local ranks). Each op has its handler in one table (handlers), the model
// being tailscale's ipn/localapi over its LocalBackend; what a handler
// needs of the node it asks the Backend, which answers with localapi
// values and knows nothing of sockets.
//
// A request that panics ends its connection, not the node.
package apiserver
