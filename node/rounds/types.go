package rounds

import (
	"cmp"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// ID names a member: a peer ID, which survives restarts because the
// identity key lives in the data dir.
type ID = peer.ID

// Ballot orders proposals for one step (Paxos ballots): N first, then the
// proposer's ID. The zero ballot is below every proposal.
type Ballot struct {
	N  uint64
	By ID
}

// Less reports whether b orders before o.
func (b Ballot) Less(o Ballot) bool {
	if b.N != o.N {
		return b.N < o.N
	}
	return b.By < o.By
}

// IsZero reports whether b is the zero ballot.
func (b Ballot) IsZero() bool { return b.N == 0 && b.By == "" }

// Value is what a step decides: the attempt whose all-reduce ran over Ring
// (every ring member holds its result), and Next, the agreed list for the
// step after (the ring plus the joiners it admits). Ring and Next are
// sorted.
type Value struct {
	Attempt Ballot
	Ring    []ID
	Next    []ID
	// Links are the ring members' link rates (aligned with Ring) that the
	// attempt's all-reduce plans its ring and segments with; nil: unknown
	// (the classic ring).
	Links []Link
	// Shares are the next step's shares of the global batch, aligned with
	// Next and summing to ShareUnits; nil: equal shares.
	Shares []uint32
}

// Equal reports whether v and o decide the same thing.
func (v Value) Equal(o Value) bool {
	return v.Attempt == o.Attempt && slices.Equal(v.Ring, o.Ring) && slices.Equal(v.Next, o.Next) &&
		slices.Equal(v.Links, o.Links) && slices.Equal(v.Shares, o.Shares)
}

func (v Value) clone() Value {
	return Value{Attempt: v.Attempt, Ring: slices.Clone(v.Ring), Next: slices.Clone(v.Next),
		Links: slices.Clone(v.Links), Shares: slices.Clone(v.Shares)}
}

// Link is a member's link rates in bytes per second, as its node
// estimates them; 0 is unknown.
type Link struct {
	Egress, Ingress uint64
}

// ShareUnits is the sum of a step's shares of the global batch.
const ShareUnits = 1 << 20

// EqualShares splits ShareUnits over n members, the remainder to the
// first ones.
func EqualShares(n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = ShareUnits / uint32(n)
		if i < ShareUnits%n {
			out[i]++
		}
	}
	return out
}

// ShareRange is member id's part [lo, hi) of ShareUnits when list (in
// order) splits it by shares (nil: equal). A trainer's part of a global
// batch of b samples is [b*lo/ShareUnits, b*hi/ShareUnits) in integer
// arithmetic, so the members' parts cover the batch exactly once.
func ShareRange(list []ID, shares []uint32, id ID) (lo, hi uint32, ok bool) {
	if len(shares) != len(list) {
		shares = EqualShares(len(list))
	}
	for i, m := range list {
		if m == id {
			return lo, lo + shares[i], true
		}
		lo += shares[i]
	}
	return 0, 0, false
}

// Info is what a node advertises in its heartbeat: a hint for liveness and
// for whom to wait; it never changes the agreed list.
type Info struct {
	State string // one of the State* constants
	Epoch uint64
	Step  uint64 // next step (member) or start step (forming)
	List  string // member: hash prefix of the agreed list; forming: of the forming set
	// Speed is the trainer's throughput as its node measures it, in share
	// units per second (ShareUnits is the whole global batch); 0 unknown.
	Speed uint64
	Link  Link // the node's link estimate
}

// Peer is one entry of the membership view.
type Peer struct {
	ID   ID
	Live bool // alive or suspect: not declared dead, not left
	Info Info // decoded heartbeat; zero when none or undecodable
}

// Node states.
const (
	StateIdle     = "idle"     // no trainer has joined
	StateForming  = "forming"  // a trainer joined; no mesh trains: forming one
	StateJoining  = "joining"  // asking a training mesh to admit this node
	StateTraining = "training" // a member of the agreed list
	StateWaiting  = "waiting"  // a member, but a majority of the list is not reachable
)

// Event is an input of Machine.Step.
type Event interface{ isEvent() }

// Recv is a message from a peer.
type Recv struct{ Msg Message }

// ViewChanged is the latest membership view (self excluded). Settled says
// discovery has had its chance (the peers this node was told to join
// answered, or a bound passed): a node never forms a new mesh before.
type ViewChanged struct {
	Peers   []Peer
	Settled bool
}

// TrainerJoin: the local trainer wants to train. Its state is at StartStep
// (0 for a fresh trainer); a new mesh formed by this node starts there.
// With NeedState, a member whose list is at another step than StartStep
// joins at the next step like a joiner, so that a checkpoint of its entry
// step is saved for it; without it, a member is answered at once with its
// open step (the trainer takes the mesh's step as it is).
//
// Resync: the trainer's state diverged from the mesh's (a state check said
// so), so the state it holds at StartStep is not the list's even when the
// step is: a member joins at the next step like a joiner (NeedState is
// implied), never at once.
type TrainerJoin struct {
	StartStep uint64
	NeedState bool
	Resync    bool
}

// TrainerLeave: the trainer left, disconnected or was excluded.
type TrainerLeave struct{ Reason string }

// Submit: the trainer submitted its buffer for Step. Sized: it says how
// many samples it computed (a weighted mean by samples), so the time it
// took counts towards its speed; a trainer that does not follow shares
// has no speed and keeps its share.
//
// InParts: the buffer comes in parts that the trainer marks ready as it
// computes them (a DDP model's buckets during backward), so the step's
// all-reduce starts before its data is complete: the reduce phase is then
// also bounded by Config.TrainerTimeout, and the trainer's time is taken
// at PartsReady rather than here.
type Submit struct {
	Step    uint64
	Sized   bool
	InParts bool
}

// PartsReady: the trainer marked the last part of Step's buffer ready;
// Sized as in Submit.
type PartsReady struct {
	Step  uint64
	Sized bool
}

// ReduceDone is the outcome of a StartReduce.
type ReduceDone struct {
	Step    uint64
	Attempt Ballot
	Err     error
	// Settings is true when the ring disagreed on what no retry changes
	// (buffer length, wire type, reduce op): the trainer is told.
	Settings bool
}

// ReduceProgress: the all-reduce of Step's Attempt on this node moved
// bytes since the last report. A proposal's all-reduce phase ends when no
// progress is reported for PhaseTimeout, not when the round is long: a
// large buffer on a slow link may take minutes.
type ReduceProgress struct {
	Step    uint64
	Attempt Ballot
}

// Tick carries time forward; node sends one every Config.Tick.
type Tick struct{}

// SetLink is the node's latest estimate of its own links.
type SetLink struct{ Link Link }

// Reform: the operator re-forms the mesh as a new epoch from a checkpoint
// of Step, because a majority of the last list is gone for good.
type Reform struct{ Step uint64 }

func (Recv) isEvent()           {}
func (ViewChanged) isEvent()    {}
func (TrainerJoin) isEvent()    {}
func (TrainerLeave) isEvent()   {}
func (Submit) isEvent()         {}
func (PartsReady) isEvent()     {}
func (ReduceDone) isEvent()     {}
func (ReduceProgress) isEvent() {}
func (Tick) isEvent()           {}
func (Reform) isEvent()         {}
func (SetLink) isEvent()        {}

// Effect is an output of Machine.Step. Node performs them in order:
// Persist before any Send that follows it.
type Effect interface{ isEffect() }

// Send delivers a message (best effort; the machine resends what matters).
type Send struct{ Msg Message }

// StartReduce runs the all-reduce of the trainer's buffer for Step over
// Ring under Attempt, into a scratch buffer (the trainer's buffer is not
// changed). List is the agreed list the ring came from. A StartReduce for
// a new attempt supersedes a running one: cancel it first.
type StartReduce struct {
	Step    uint64
	Epoch   uint64
	Attempt Ballot
	Ring    []ID
	List    []ID
	Links   []Link // aligned with Ring; nil: the classic ring
}

// Apply: Step is decided with Value and this node holds its result: copy
// the scratch result into the trainer's buffer and answer its Submit.
type Apply struct {
	Step  uint64
	Value Value
}

// Admitted answers the trainer's TrainerJoin: it is a member from Step with
// List. Formed is true when this node formed a new mesh at the trainer's
// own start step (no checkpoint needed).
type Admitted struct {
	Step   uint64
	Epoch  uint64
	List   []ID
	Formed bool
	Shares []uint32 // of Step's global batch, aligned with List; nil: equal
}

// Fail answers the trainer's pending Submit with an error: Reason, Msg
// (the same in words, for the trainer) and the step the mesh expects.
type Fail struct {
	Reason   Reason
	Msg      string
	NextStep uint64
}

// Persist writes Durable atomically before the effects that follow it.
type Persist struct{ State Durable }

// Publish sets the heartbeat payload.
type Publish struct{ Info Info }

func (Send) isEffect()        {}
func (StartReduce) isEffect() {}
func (Apply) isEffect()       {}
func (Admitted) isEffect()    {}
func (Fail) isEffect()        {}
func (Persist) isEffect()     {}
func (Publish) isEffect()     {}

// Reason is why the machine fails a trainer's call (Fail). Node answers
// the trainer with the local API error code of each (node/codes.go).
type Reason uint8

// Failure reasons.
const (
	ReasonNotMember        Reason = iota + 1 // not a training member: join first
	ReasonWaiting                            // a member, but not in the majority: waiting to rejoin
	ReasonExcluded                           // the mesh went on without the trainer: join again
	ReasonStepMismatch                       // the trainer's step is not the one the mesh expects (Fail.NextStep)
	ReasonBusy                               // an all-reduce of the step is already in flight
	ReasonSettingsMismatch                   // the ring's trainers or nodes disagree on settings no retry changes
	reasonEnd
)

var reasonNames = [...]string{"", "not a member", "waiting", "excluded", "step mismatch", "busy", "settings mismatch"}

func (r Reason) String() string {
	if r > 0 && r < reasonEnd {
		return reasonNames[r]
	}
	return "unknown"
}

// Config holds the machine's timing. Every wait is bounded by one of them.
type Config struct {
	// MinMembers forming nodes must agree before a new mesh forms.
	MinMembers int
	// FormWait is how long a forming node looks for a training mesh before
	// it may form one (discovery needs a few heartbeats), counted from its
	// trainer's join and from the last new peer in its view. Default 2s.
	FormWait time.Duration
	// FormTimeout abandons a newly formed list that decides no step this
	// long (too few of its members took their place). Default 20s.
	FormTimeout time.Duration
	// Resend is how often unanswered messages are sent again. Default 100ms.
	Resend time.Duration
	// PhaseTimeout bounds each phase of a proposal (promises, all-reduce,
	// accepts); a phase that runs out is abandoned and retried with a
	// higher ballot. The all-reduce phase is bounded by progress: it runs
	// out PhaseTimeout after the proposer's own all-reduce last moved
	// bytes (ReduceProgress) or a ring member last reported ready, however
	// long the whole round takes. Default 10s.
	PhaseTimeout time.Duration
	// RetryBackoff is the first pause before a new ballot; it doubles up to
	// 20x. Default 20ms.
	RetryBackoff time.Duration
	// JoinPoll is how often a joining node asks again. Default 250ms.
	JoinPoll time.Duration
	// JoinTTL is how long a join request counts. Default 3s.
	JoinTTL time.Duration
	// TrainerTimeout excludes a trainer that has not submitted the next
	// step this long after the previous one; 0 disables. Default 5m.
	TrainerTimeout time.Duration
	// OfferWait is how long a proposer waits for the members it expects to
	// offer before it starts without them. Default TrainerTimeout.
	OfferWait time.Duration
}

func sortIDs(ids []ID) []ID {
	slices.SortFunc(ids, func(a, b ID) int { return cmp.Compare(a, b) })
	return slices.Compact(ids)
}
