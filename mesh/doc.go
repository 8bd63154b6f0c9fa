// Package mesh owns a node's place in the mesh: the libp2p host (identity,
// transports, private network, connection gater), peer discovery (join
// addresses, mDNS, DHT), membership from signed heartbeats, SWIM-like failure
// detection with gossiped failure notices, and the host's capabilities (GPUs
// through NVML, CPU cores, RAM). It carries topics and streams for the other
// packages but knows nothing of gradients or checkpoints.
package mesh
