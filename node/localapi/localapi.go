// Package localapi is the wire format of the local trainer API that a node
// serves on DATA_DIR/ringmesh.sock (PROTOCOL.md, "Local trainer API").
//
// A connection carries frames in both directions. A frame is a 4-byte
// big-endian length n (1 <= n <= MaxFrame) followed by n bytes of one UTF-8
// JSON object. The client sends Requests, the node answers each with one
// Response carrying the same id, in order. Tensor bytes never cross the
// socket: they live in a shared-memory file the client registers once
// (op "register_fd") and then names by buffer id, offset and count.
//
// The package is the API's contract, shared by the node and its clients:
// ops, error codes, Request and Response, and the types they carry, the
// node's status report (Status) among them. It imports nothing of the
// node, so a trainer linking node/client links no libp2p.
package localapi

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Version is the protocol version a hello carries. A node answers a hello
// with another version with code "unsupported_version".
const Version = 1

// MaxFrame bounds one frame's JSON body. A larger length prefix is rejected
// before anything is allocated.
const MaxFrame = 1 << 20

// SocketName is the control socket's file name inside the data dir.
const SocketName = "ringmesh.sock"

// Ops, append-only.
const (
	OpHello = "hello"
	// OpRegister (a path) is refused: the file could shrink under the
	// node. Use OpRegisterFD.
	OpRegister        = "register"
	OpUnregister      = "unregister"
	OpJoin            = "join"
	OpAllReduce       = "allreduce"
	OpMembership      = "membership"
	OpStatus          = "status"
	OpLeave           = "leave"
	OpCheckpointSave  = "checkpoint_save"
	OpCheckpointList  = "checkpoint_list"
	OpCheckpointFetch = "checkpoint_fetch"
	// OpReform: the operator re-forms the mesh as a new epoch because a
	// majority of the agreed list is gone for good (ringmesh reform).
	OpReform = "reform"
	// OpRegisterFD registers a buffer passed as a file descriptor with the
	// request frame (SCM_RIGHTS): a memfd sealed with F_SEAL_SHRINK and
	// F_SEAL_GROW, Bytes long. Response.Buffer is its id.
	OpRegisterFD = "register_fd"
	// OpPartReady marks Part of the pending all-reduce of Step (one sent
	// with Parts on this connection) ready: its data is in the buffer and
	// the trainer does not touch that range until allreduce_wait answers.
	OpPartReady = "part_ready"
	// OpAllReduceWait waits for the pending all-reduce of Step and answers
	// as a plain allreduce does.
	OpAllReduceWait = "allreduce_wait"
	// OpStateHash reports a fingerprint (Hash) of the model state the
	// trainer holds at Step (after applying Step-1). The node advertises it
	// and compares it with the other members' (PROTOCOL.md, "State
	// checks"); Response.StateCheck says what the comparisons found.
	OpStateHash = "state_hash"
)

// State hashes a trainer reports (OpStateHash): lowercase hex, at least
// MinStateHash and at most MaxStateHash characters; the node compares the
// first MinStateHash.
const (
	MinStateHash = 16
	MaxStateHash = 64
)

// MaxParts bounds an all-reduce's Parts.
const MaxParts = 4096

// MaxLocalRanks bounds a join's LocalRanks (processes on one host).
const MaxLocalRanks = 1024

// Error codes in Response.Code, append-only.
const (
	CodeBadRequest         = "bad_request"
	CodeUnsupportedVersion = "unsupported_version"
	CodeNotMember          = "not_member"    // call join first
	CodeWaiting            = "waiting"       // not in the majority, waiting to rejoin
	CodeStepMismatch       = "step_mismatch" // Response.NextStep says which step the mesh expects
	CodeBusy               = "busy"          // an all-reduce for this step is already in flight
	CodeExcluded           = "excluded"      // the node left the ring (trainer too slow, minority); join again
	CodeShuttingDown       = "shutting_down"
	CodeTimeout            = "timeout"
	CodeNotFound           = "not_found"
	CodeUnavailable        = "unavailable" // e.g. no checkpoint provider reachable
	CodeInternal           = "internal"
	CodeDiskFull           = "disk_full"         // the node's (or the destination's) file system is full
	CodeHashMismatch       = "hash_mismatch"     // every provider served data that failed verification
	CodeSettingsMismatch   = "settings_mismatch" // ring members called with another length, wire or op, or run other lanes/chunking
)

// ErrFrameTooLarge is returned for a length prefix above MaxFrame.
var ErrFrameTooLarge = errors.New("localapi: frame too large")

// Request is one call. Only the fields of its op are read.
type Request struct {
	ID uint64 `json:"id"`
	Op string `json:"op"`

	// hello
	Version int    `json:"version,omitempty"`
	Client  string `json:"client,omitempty"`

	// register (Path, Bytes), unregister and allreduce (Buffer)
	Path   string `json:"path,omitempty"`
	Bytes  int64  `json:"bytes,omitempty"`
	Buffer uint64 `json:"buffer,omitempty"`

	// join: the step to start from when this node forms a new mesh.
	StartStep uint64 `json:"start_step,omitempty"`
	// join: how long to wait for admission before answering "timeout"
	// (0: no limit; the join waits until admitted or the connection closes).
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// join: how many trainer processes this trainer speaks for (torchrun's
	// local ranks, which reduce among themselves first; 0 or 1: one). The
	// node reports it in status; the round still takes one contribution
	// per node.
	LocalRanks int `json:"local_ranks,omitempty"`

	// allreduce
	Step   uint64  `json:"step,omitempty"`
	Offset int64   `json:"offset,omitempty"` // bytes into the buffer, multiple of 4
	Count  int64   `json:"count,omitempty"`  // elements
	DType  string  `json:"dtype,omitempty"`  // "float32"
	Wire   string  `json:"wire,omitempty"`   // "float32" (default), "bfloat16", "float16", "int8", "float4"
	Reduce string  `json:"reduce,omitempty"` // "sum", "mean" (default), "wmean"
	Weight float64 `json:"weight,omitempty"` // wmean: this member's weight (e.g. samples)
	// allreduce: the buffer comes in parts, each [offset, count] in
	// elements from Offset, that tile the Count elements; they are reduced
	// in this order, each once part_ready marks it. Such a call answers at
	// once (Pending) and allreduce_wait gets the outcome.
	Parts [][2]int64 `json:"parts,omitempty"`
	// SyncEvery (allreduce) > 0 says the round is a DiLoCo outer step over
	// that many inner steps; 0: every-step training. Shown in status
	// (Status.Training), not otherwise used.
	SyncEvery int `json:"sync_every,omitempty"`
	// part_ready: the index into Parts.
	Part int `json:"part,omitempty"`

	// checkpoint_fetch: Root or Latest; Dest is where the file is written.
	Root   string `json:"root,omitempty"`
	Latest bool   `json:"latest,omitempty"`
	Dest   string `json:"dest,omitempty"`
	// checkpoint_fetch: an id the caller picks so that it can find this
	// fetch's progress in checkpoint_list's Fetches (from a second
	// connection) while the call runs.
	FetchID string `json:"fetch_id,omitempty"`
	// checkpoint_list: every checkpoint known, of any run and announcer;
	// without it only those that count (see PROTOCOL.md).
	All bool `json:"all,omitempty"`

	// join: the trainer needs the mesh's state at its entry step. When the
	// node was admitted into a running mesh (rather than forming a new one at
	// StartStep), the node waits (bounded) for the checkpoint of the entry
	// step that a member's trainer saves (allreduce SaveCheckpoint), fetches
	// it and exports it to Dest (an absolute path; default
	// DATA_DIR/join-checkpoint.ckpt); Response.Checkpoint describes it. No
	// such checkpoint in time: code "unavailable" (join again).
	WantCheckpoint bool `json:"want_checkpoint,omitempty"`
	// join: the trainer's state diverged from the mesh's (a state check
	// said so): even when the trainer is at the list's step, the node is
	// admitted as a joiner at a later step, for which a member saves the
	// checkpoint the trainer loads (with WantCheckpoint).
	Resync bool `json:"resync,omitempty"`

	// state_hash: the fingerprint of the trainer's state at Step.
	Hash string `json:"hash,omitempty"`
}

// Response answers the request with the same ID.
type Response struct {
	ID    uint64 `json:"id"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`

	// hello, membership
	Version int    `json:"version,omitempty"`
	Mesh    string `json:"mesh,omitempty"`
	Self    string `json:"self,omitempty"`
	State   string `json:"state,omitempty"` // idle, forming, joining, training, waiting
	Reason  string `json:"reason,omitempty"`

	// register
	Buffer uint64 `json:"buffer,omitempty"`
	// allreduce with parts: submitted; allreduce_wait has the outcome.
	Pending bool `json:"pending,omitempty"`

	// join, allreduce, membership
	Step        uint64   `json:"step,omitempty"`      // join: entry step; allreduce: the step applied
	NextStep    uint64   `json:"next_step,omitempty"` // the step the mesh expects next
	Members     []string `json:"members,omitempty"`   // the ring that produced the result / the agreed list
	MemberCount int      `json:"member_count,omitempty"`
	TotalWeight float64  `json:"total_weight,omitempty"`
	Attempts    int      `json:"attempts,omitempty"`
	// allreduce: members admitted for the next step, and whether this trainer
	// should save a checkpoint of its state before the next step so that they
	// can load it.
	Joiners        []string `json:"joiners,omitempty"`
	SaveCheckpoint bool     `json:"save_checkpoint,omitempty"`
	// join, allreduce: this trainer's part of the global batch of the
	// step it computes next (NextStep), as the mesh agreed it.
	Share *Share `json:"share,omitempty"`
	// join: the checkpoint holding the state at the entry step, when any.
	Checkpoint *CheckpointInfo `json:"checkpoint,omitempty"`
	// join: the trainer is in a mesh formed anew at Step (no step of its
	// epoch decided yet), keeping its own state, as every member's trainer
	// does: it was not admitted into a running mesh. Trainers that want to
	// start from one state (torch DDP's broadcast of rank 0's parameters)
	// agree on it among Members then (PROTOCOL.md, "A new mesh's first
	// step").
	Formed bool `json:"formed,omitempty"`
	// join: the run of the epoch joined ("MESH/eEPOCH"): the checkpoints
	// saved in it carry this RunID.
	RunID string `json:"run_id,omitempty"`

	// checkpoint_list
	Checkpoints []CheckpointInfo `json:"checkpoints,omitempty"`
	// checkpoint_list: fetches in progress on this node.
	Fetches []FetchProgress `json:"fetches,omitempty"`
	// checkpoint_fetch, join with want_checkpoint: what the fetch did.
	Fetch *FetchStats `json:"fetch,omitempty"`

	// status: the same object `ringmesh status --json` prints.
	Status *Status `json:"status,omitempty"`

	// allreduce, state_hash: a state check found the trainer's state
	// diverged from the mesh's (Diverged), and the trainer has not joined
	// with Resync since; state_hash: else the last check decided, if any.
	StateCheck *StateCheck `json:"state_check,omitempty"`
}

// StateCheck is the outcome of one comparison of the trainer's model state
// with the other members' (PROTOCOL.md, "State checks").
type StateCheck struct {
	Epoch uint64 `json:"epoch"`
	Step  uint64 `json:"step"`
	Hash  string `json:"hash"` // this trainer's
	// Majority is the hash the check found the mesh holds: the one most
	// members reported; on a tie, that of the member first in the agreed
	// list among those holding a tied hash.
	Majority string `json:"majority"`
	// Agree counts the members that reported this trainer's hash, this one
	// included; Reporting the members that reported a hash for the step
	// (1: nobody else did, no verdict).
	Agree     int  `json:"agree"`
	Reporting int  `json:"reporting"`
	Diverged  bool `json:"diverged"`
}

// Share is a trainer's part of one step's global batch: of a batch of b
// samples it takes the indices [b*Lo/Units, b*Hi/Units) (integer
// division), so the members' parts cover the batch exactly once. Shares
// follow the members' measured speeds (PROTOCOL.md, "Shares").
type Share struct {
	Lo    uint32 `json:"lo"`
	Hi    uint32 `json:"hi"`
	Units uint32 `json:"units"`
}

// Slice returns the part [start, end) of a batch of b samples.
func (s Share) Slice(b int) (start, end int) {
	if s.Units == 0 {
		return 0, b
	}
	return int(uint64(b) * uint64(s.Lo) / uint64(s.Units)), int(uint64(b) * uint64(s.Hi) / uint64(s.Units))
}

// CheckpointInfo describes one checkpoint.
type CheckpointInfo struct {
	Step      uint64   `json:"step"`
	Root      string   `json:"root"`
	Size      int64    `json:"size"`
	Local     bool     `json:"local"`
	Providers []string `json:"providers,omitempty"`
	Path      string   `json:"path,omitempty"` // checkpoint_fetch, join: the file written
	// RunID is the run the checkpoint belongs to: "MESH/eEPOCH", one per
	// formation of the mesh ("" for checkpoints from before run IDs).
	RunID string `json:"run_id,omitempty"`
}

// FetchProgress is a checkpoint fetch in progress (checkpoint_list).
type FetchProgress struct {
	FetchID   string `json:"fetch_id,omitempty"` // the caller's Request.FetchID
	Step      uint64 `json:"step"`
	Root      string `json:"root"`
	Size      int64  `json:"size"`
	Done      int64  `json:"done"`      // bytes verified and held, resumed ones included
	Fetched   int64  `json:"fetched"`   // bytes fetched by this call
	Providers int    `json:"providers"` // providers still in use
	ElapsedMS int64  `json:"elapsed_ms"`
}

// FetchStats says what a finished fetch did. Chunks held verified from an
// earlier, interrupted fetch count as ChunksResumed and were not fetched
// again; a checkpoint that was already local has Local set and fetched
// nothing.
type FetchStats struct {
	Local         bool     `json:"local,omitempty"`
	Chunks        int      `json:"chunks"`
	ChunksFetched int      `json:"chunks_fetched"`
	ChunksResumed int      `json:"chunks_resumed"`
	Fetched       int64    `json:"fetched"`             // bytes fetched and verified
	Providers     []string `json:"providers"`           // peers that served chunks
	BadPeers      []string `json:"bad_peers,omitempty"` // peers that served corrupt data (reported)
	FetchMS       int64    `json:"fetch_ms"`            // the fetch itself
	ExportMS      int64    `json:"export_ms"`           // writing Dest (verified again)
}

// WriteFrame encodes v as JSON and writes it as one frame.
func WriteFrame(w io.Writer, v any) error {
	buf, err := encodeFrame(v)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

func encodeFrame(v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("localapi: encode: %w", err)
	}
	if len(body) > MaxFrame {
		return nil, ErrFrameTooLarge
	}
	buf := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)))
	copy(buf[4:], body)
	return buf, nil
}

// ReadFrame reads one frame and decodes it into v. The length is checked
// against MaxFrame before the body is allocated.
func ReadFrame(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxFrame {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return fmt.Errorf("localapi: short frame: %w", io.ErrUnexpectedEOF)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("localapi: decode: %w", err)
	}
	return nil
}
