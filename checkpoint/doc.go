// Package checkpoint owns the content-addressed checkpoint store (chunked,
// SHA-256 verified, written atomically), announcements of new checkpoints
// (over the small Announcer interface it defines), the multi-peer fetch
// protocol /ringmesh/checkpoint/1 and background replication.
//
// It does not import mesh: node adapts the mesh's gossipsub checkpoint topic
// to Announcer, hands Replicator the live member list, and calls
// Catalog.RemoveProvider when membership drops a peer.
//
// # Components
//
//   - Store: checkpoints on disk under DATA_DIR/checkpoints. Put (or
//     PutWithOptions, with a run ID), Export, List, Latest, Manifest,
//     ReadChunk, Pin; retention keeps the StoreConfig.Keep complete
//     checkpoints that arrived last (by save or fetch time, never by step)
//     and never deletes a pinned one; a Put whose checkpoint retention
//     removes at once fails (ErrDropped). Nothing is allocated for a
//     checkpoint larger than the file system's free space (NoSpaceError).
//   - Catalog: known checkpoints and their providers, from announcements
//     (forged, malformed and conflicting ones are rejected and counted);
//     each author (the first peer to announce a root) has a quota of
//     entries, and eviction goes by arrival, oldest first, within the
//     largest quota, so one peer's flood cannot push out others'
//     checkpoints. List, ListRun (by run ID). It announces and periodically
//     re-announces the local complete checkpoints.
//   - Server: serves the store over /ringmesh/checkpoint/1, with a cap on
//     the streams per peer.
//   - Fetcher: pulls a checkpoint from several providers at once, with a
//     cap on its streams per provider across its fetches.
//   - Replicator: pulls new checkpoints in the background until R nodes
//     hold them, at a bounded rate, only from providers its Trust hook
//     accepts and only what fits in the free space.
//
// # Disk layout
//
//	DIR/LOCK                   flock held by the process that has it open
//	DIR/tmp/                   scratch; emptied on open
//	DIR/<root hex>/manifest    complete: encoded manifest (hashes to root);
//	                           its mtime is when the checkpoint arrived
//	                           (retention order)
//	DIR/<root hex>/data        complete: the file's bytes
//	DIR/<root hex>.partial/    a resumable fetch: same two files, data
//	                           preallocated; which chunks are held is
//	                           found by hashing them on open
//
// Put and fetch write into DIR/tmp (or the .partial directory), fsync the
// files and the directory, then rename the directory into place and fsync
// DIR, so a crash never leaves something that looks complete.
//
// # Manifest encoding (versions 1 and 2, big-endian)
//
//	offset  size    field
//	0       4       magic "RMCM"
//	4       1       version: 1 without a run ID, 2 with one
//	5       8       step
//	13      8       size in bytes, <= 2^40
//	21      4       chunk size, in [1 KiB, 64 MiB]
//	25      4       chunk count n = ceil(size / chunk size), <= 2^18
//	29      R       version 2 only: run ID length (1 byte, 1..64), then
//	                the run ID (printable ASCII, no spaces); R = 1 + length
//	29+R    32*n    SHA-256 of each chunk (R = 0 in version 1)
//
// The encoding must be exactly 29+R+32n bytes. Root = SHA-256(encoding).
// A checkpoint without a run ID is written in version 1, so its root is
// what it always was; both versions are read.
//
// # Announcement encoding (versions 1 and 2, big-endian)
//
//	offset  size    field
//	0       4       magic "RMCA"
//	4       1       version: 1 without a run ID, 2 with one
//	5       8       step
//	13      32      root
//	45      8       size in bytes, <= 2^40
//	53      2       provider peer ID length L, 1..128
//	55      L       provider peer ID (binary multihash)
//	55+L    R       version 2 only: run ID length (1 byte, 1..64), then
//	                the run ID; R = 1 + length
//
// An announcement without a run ID is written in version 1 (nodes that
// predate run IDs reject version 2). It is accepted only if its provider
// is the message's signed gossip author.
//
// # Fetch protocol /ringmesh/checkpoint/1
//
// Every frame is
//
//	4 bytes  length N of what follows (type + body), big-endian, N >= 1
//	1 byte   type
//	N-1      body
//
// and N is checked against the cap for the expected frame before anything
// is allocated. The fetcher sends requests one at a time on a stream and
// reads one reply for each:
//
//	0x01 manifest request  body: root (32)
//	0x02 chunk request     body: root (32), chunk index (4)
//	0x81 manifest reply    body: encoded manifest (<= 29+32*2^18)
//	0x82 chunk reply       body: chunk index (4), chunk bytes
//	0xff error reply       body: code (1), UTF-8 message (<= 256)
//
// Error codes: 1 unknown root, 2 chunk index out of range, 3 chunk not
// held, 4 bad request, 5 internal. Unknown root and out-of-range requests
// get an error reply and the stream stays usable; a malformed frame gets a
// bad-request reply and the stream is
// closed (a reset would discard the reply); an I/O error resets it. The fetcher ends a stream with
// CloseWrite and waits for the server's EOF. Type and code values are
// append-only.
package checkpoint
