package apiserver

import (
	"context"

	"github.com/ringmesh/ringmesh/allreduce"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// Backend is the node as the local API sees it. Its methods may be called
// from many connections at once. A method that answers an op returns the
// localapi.Response to send: one with a Code is a refusal (localapi's
// error codes); the server fills in ID and OK.
type Backend interface {
	// Membership is the node's round state and agreed member list
	// (hello, membership).
	Membership() Membership
	// Status is the node's status report (status).
	Status() localapi.Status
	// Trained tells the backend the trainer's mode after each applied
	// all-reduce (for metrics).
	Trained(localapi.TrainingStatus)

	// SetLocalRanks records how many processes the attached trainer
	// speaks for: its join's local ranks, 0 when it detaches.
	SetLocalRanks(n int)
	// Join admits the attached trainer into the mesh (join); ctx bounds
	// the wait.
	Join(ctx context.Context, j Join) localapi.Response
	// Leave stops offering rounds for the trainer, which left or
	// disconnected; the mesh goes on without this node.
	Leave(reason string)
	// Submit hands the trainer's data for step to the round. Without
	// parts the data is ready; with parts (they tile data) each part's
	// all-reduce waits until Pending.PartReady marks it. A nil Pending
	// comes with the refusal to answer.
	Submit(step uint64, data []float32, opt allreduce.Options, parts []Part) (Pending, localapi.Response)
	// StateHash takes the trainer's fingerprint of its model state at
	// step (state_hash) and answers with what the state checks found.
	StateHash(step uint64, hash string) localapi.Response

	// CheckpointSave stores the file at path (absolute) as the checkpoint
	// of step and announces it (checkpoint_save).
	CheckpointSave(ctx context.Context, path string, step uint64) localapi.Response
	// CheckpointList lists the checkpoints that count (all: every one
	// known) and the fetches running (checkpoint_list).
	CheckpointList(all bool) localapi.Response
	// CheckpointFetch fetches a checkpoint and writes it to f.Dest
	// (checkpoint_fetch).
	CheckpointFetch(ctx context.Context, f Fetch) localapi.Response
	// Reform re-forms the mesh as a new epoch (reform).
	Reform() localapi.Response
}

// Pending is a submitted all-reduce.
type Pending interface {
	// PartReady marks part i ready for its all-reduce; it fails for a
	// part that does not exist.
	PartReady(i int) error
	// Wait returns the answer to the all-reduce once the step is decided
	// (or refused, or the node stops: every submit is answered). A decided
	// step has left its result in the submitted data, bit-identical on
	// every member of the ring.
	Wait() localapi.Response
}

// Membership is what hello and membership report of the node.
type Membership struct {
	Mesh, Self    string
	State, Reason string
	NextStep      uint64
	Members       []string // the agreed list for NextStep
}

// Join is a trainer's join (localapi.Request's join fields).
type Join struct {
	StartStep      uint64
	WantCheckpoint bool
	Resync         bool
	Dest           string
}

// Fetch names the checkpoint a checkpoint_fetch gets (Root, or the newest
// that counts with Latest) and where it is written.
type Fetch struct {
	Root    string
	Latest  bool
	Dest    string
	FetchID string
}

// Part is one range of a submitted buffer, in elements.
type Part struct{ Off, N int }
