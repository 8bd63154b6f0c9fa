// Package rounds is ringmesh's round, join and recovery protocol as one
// deterministic state machine. It does no I/O, reads no clock and starts no
// goroutine: node feeds a Machine events (messages from peers, membership
// views, the trainer's calls, all-reduce outcomes, ticks carrying now) with
// Step and performs the effects it returns (persist, send, start an
// all-reduce, apply a result, answer the trainer, publish a heartbeat),
// the way etcd-io/raft's RawNode is driven.
//
// Each training step is decided once, by single-decree Paxos over the
// step's agreed list L (every member of L is an acceptor, whether or not
// its trainer takes part). The decided value names an all-reduce attempt:
// its ballot, its ring (the members that offered the step) and the next
// list (the ring plus admitted joiners). A proposer (the lowest-ID member
// that offered) runs phase 1 (prepare/promise from a majority of L); when
// the quorum reports no accepted value and no held result, it starts the
// attempt's all-reduce over the ring, collects a ready from every ring
// member (each holds the result), runs phase 2 (accept from a majority of
// L) and tells L and the next list (commit). A value accepted earlier, or
// an attempt whose result a member still holds, is proposed again instead
// of a new all-reduce. Members apply only decided values, so every member
// that applies step k applies the same bytes from the same list, and only
// a side holding a majority of L can decide anything.
//
// What must survive a restart is in Durable (epoch, next step, list,
// acceptor state, the attempt whose result the node holds, the last
// decision); node persists it before the effects that follow. A message
// that does not fit its sender's role in the current step (a ready from
// outside the ring, an accept from someone else's ballot, any round
// message from outside the list) is dropped and counted in Dropped;
// heartbeat claims (Info) only say whom to wait for and never change the
// agreed list.
//
// The byte layouts of a Message (AppendMessage, DecodeMessage) and of a
// Durable (AppendDurable, DecodeDurable) are here, beside their types;
// node frames messages on its streams and wraps the durable state in its
// state files. Decoders take untrusted bytes: they bound every length and
// return an error that wraps ErrMalformed, never panic.
//
// One file per role: machine.go (Step, tick, decide), trainer.go (the
// local trainer's join and submit), propose.go (the proposer), acceptor.go
// (the acceptor), ring.go (a ring member's all-reduce), join.go (joins),
// form.go (formation and re-forming), recv.go (checks of a message against
// its sender's role, catching up), plan.go (ring links and batch shares).
//
// sim_test.go drives 3 to 9 machines (one schedule in 50: 17 to 33, a
// lab's list) over a seeded network with delays, reordering, duplicates,
// drops, crashes and restarts, partitions and trainer faults, and checks
// the invariants after every event (PROTOCOL.md lists them);
// scale_test.go counts the messages a step costs as the list grows.
package rounds
