package rounds

import (
	"encoding/binary"
	"fmt"
)

// Decided is the decision of one step, kept to answer members that missed
// it.
type Decided struct {
	Step  uint64
	Value Value
}

// Durable is what a node must not forget across a restart (raft persists
// its term, vote and log the same way): its place in the mesh's history
// and its acceptor state for the open step.
type Durable struct {
	Epoch    uint64
	Step     uint64 // the next step to decide; nothing below it is ever formed or joined
	List     []ID   // the agreed list for Step; nil when not a member
	Promised Ballot // acceptor: the highest ballot promised for Step
	Accepted Ballot // acceptor: the ballot of AcceptedValue
	Value    *Value // acceptor: the value accepted for Step
	// Result is the attempt of Step whose all-reduce result this node
	// holds. Node keeps that result in a file-backed buffer that outlives
	// the process (not the machine), so a member killed after it reported
	// ready can still apply the step when it is decided.
	Result *Value
	Last   *Decided
	// LastHeld: this node holds the result of Last (it was in its ring and
	// its all-reduce succeeded) and its trainer has not applied it yet (it
	// had not submitted the step, had left, or the node restarted). A
	// trainer at Last.Step can still apply it: node keeps the result until
	// the next StartReduce.
	LastHeld bool
	// FormEpoch and FormHash are the last formation this node advertised
	// while forming (FormHash covers its set, start step and epoch). The
	// lowest member of that set may have formed it from the heartbeat
	// alone, so this node never advertises another formation at
	// FormEpoch or below: two lists can never share an epoch and step.
	FormEpoch uint64
	FormHash  string
}

// AppendDurable appends the encoding of d to b. Its byte layout
// (big-endian; ballot and value as in a message), which node wraps in its
// state file's version, sequence number and checksum:
//
//	u64 epoch | u64 step
//	u8 1 when a list follows [value whose ring is the list]
//	promised ballot | accepted ballot
//	u8 flags: bit 0 value follows, bit 1 result follows, bit 2 last follows
//	[value] [result] [u64 last step | last value]
//	u64 form epoch | u8 n | n bytes form hash
//
// The form epoch and hash came last, later: a state without them (written
// before) decodes with them zero, and trailing bytes after them are
// ignored. LastHeld is not kept: a restarted node does not claim a result
// it may no longer hold, and its trainer joins again. It fails where a
// message would (a peer ID over 255 bytes, a list over 1,024 peers) and on
// a form hash over 255 bytes.
func AppendDurable(b []byte, d Durable) ([]byte, error) {
	b = binary.BigEndian.AppendUint64(b, d.Epoch)
	b = binary.BigEndian.AppendUint64(b, d.Step)
	var err error
	if d.List != nil {
		b = append(b, 1)
		if b, err = appendValue(b, Value{Ring: d.List}); err != nil {
			return nil, err
		}
	} else {
		b = append(b, 0)
	}
	if b, err = appendBallot(b, d.Promised); err != nil {
		return nil, err
	}
	if b, err = appendBallot(b, d.Accepted); err != nil {
		return nil, err
	}
	var flags byte
	if d.Value != nil {
		flags |= 1
	}
	if d.Result != nil {
		flags |= 2
	}
	if d.Last != nil {
		flags |= 4
	}
	b = append(b, flags)
	for _, v := range []*Value{d.Value, d.Result} {
		if v != nil {
			if b, err = appendValue(b, *v); err != nil {
				return nil, err
			}
		}
	}
	if d.Last != nil {
		b = binary.BigEndian.AppendUint64(b, d.Last.Step)
		if b, err = appendValue(b, d.Last.Value); err != nil {
			return nil, err
		}
	}
	if len(d.FormHash) > 255 {
		return nil, fmt.Errorf("rounds: form hash of %d bytes, at most 255", len(d.FormHash))
	}
	b = binary.BigEndian.AppendUint64(b, d.FormEpoch)
	b = append(b, byte(len(d.FormHash)))
	return append(b, d.FormHash...), nil
}

// DecodeDurable decodes a durable state that AppendDurable encoded. An
// error wraps ErrMalformed.
func DecodeDurable(b []byte) (Durable, error) {
	var d Durable
	dec := &decoder{b: b, what: "durable state"}
	d.Epoch, d.Step = dec.u64(), dec.u64()
	if has := dec.bytes(1); has != nil && has[0] == 1 {
		d.List = dec.value().Ring
	}
	d.Promised, d.Accepted = dec.ballot(), dec.ballot()
	flags := dec.bytes(1)
	if dec.err == nil && flags[0]&1 != 0 {
		d.Value = dec.value()
	}
	if dec.err == nil && flags[0]&2 != 0 {
		d.Result = dec.value()
	}
	if dec.err == nil && flags[0]&4 != 0 {
		step := dec.u64()
		d.Last = &Decided{Step: step, Value: *dec.value()}
	}
	if dec.err == nil && len(dec.b) > 0 {
		d.FormEpoch = dec.u64()
		if n := dec.bytes(1); n != nil {
			d.FormHash = string(dec.bytes(int(n[0])))
		}
	}
	if dec.err != nil {
		return Durable{}, dec.err
	}
	return d, nil
}
