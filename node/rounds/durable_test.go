package rounds

import (
	"encoding/hex"
	"reflect"
	"testing"
)

func TestDurableGolden(t *testing.T) {
	p := testPeer(t)
	v := Value{Attempt: Ballot{N: 4, By: p}, Ring: []ID{p}, Next: []ID{p}}
	d := Durable{Epoch: 2, Step: 9, List: []ID{p}, Promised: Ballot{N: 5, By: p}, Accepted: v.Attempt,
		Value: &v, Last: &Decided{Step: 8, Value: v}, FormEpoch: 3, FormHash: "ab"}
	got, err := AppendDurable(nil, d)
	if err != nil {
		t.Fatal(err)
	}
	id := testIDHex(t)
	value := "0000000000000004" + id + "0001" + id + "0001" + id + "0000" + "0000" // attempt 4, ring, next, no links, no shares
	want := "0000000000000002" + "0000000000000009" +                              // epoch 2, step 9
		"01" + "0000000000000000" + "00" + "0001" + id + "0000" + "0000" + "0000" + // a list: a value whose ring it is
		"0000000000000005" + id + "0000000000000004" + id + // promised 5, accepted 4
		"05" + value + // a value and a last decision follow, no result
		"0000000000000008" + value + // the last decision: step 8
		"0000000000000003" + "02" + "6162" // form epoch 3, form hash "ab"
	if hex.EncodeToString(got) != want {
		t.Errorf("encode:\n got %x\nwant %s", got, want)
	}
	back, err := DecodeDurable(got)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, d) {
		t.Errorf("round trip: got %+v, want %+v", back, d)
	}
	if back, err := DecodeDurable(append(got, 1, 2, 3)); err != nil || !reflect.DeepEqual(back, d) {
		t.Errorf("with trailing bytes: got %+v, %v; want %+v", back, err, d)
	}
	// A state written before the form epoch and hash were kept.
	old := d
	old.FormEpoch, old.FormHash = 0, ""
	if back, err := DecodeDurable(got[:len(got)-11]); err != nil || !reflect.DeepEqual(back, old) {
		t.Errorf("without the form tail: got %+v, %v; want %+v", back, err, old)
	}
	if _, err := DecodeDurable(got[:len(got)-1]); err == nil {
		t.Error("a cut form hash decoded")
	}
}

func TestDurableRejects(t *testing.T) {
	good, _ := AppendDurable(nil, Durable{Step: 1, Result: &Value{}})
	cases := map[string][]byte{
		"empty":     {},
		"truncated": good[:len(good)-1],
		"too many peers": func() []byte {
			b := append([]byte{}, good...)
			b[len(b)-17], b[len(b)-16] = 0xff, 0xff // the result's ring, before the 9-byte form tail
			return b
		}(),
	}
	for name, b := range cases {
		if d, err := DecodeDurable(b); err == nil {
			t.Errorf("%s: decoded %+v without error", name, d)
		}
	}
	if b, err := AppendDurable(nil, Durable{List: make([]ID, maxList+1)}); err == nil {
		t.Errorf("a list of %d encoded in %d bytes without error", maxList+1, len(b))
	}
}

func FuzzDurable(f *testing.F) {
	p := testPeer(f)
	v := Value{Attempt: Ballot{N: 4, By: p}, Ring: []ID{p}, Next: []ID{p}, Links: []Link{{1, 2}}, Shares: []uint32{ShareUnits}}
	for _, d := range []Durable{{}, {Epoch: 1, Step: 2, List: []ID{p, p}, Promised: Ballot{N: 3, By: p}},
		{Step: 7, Accepted: v.Attempt, Value: &v, Result: &v, Last: &Decided{Step: 6, Value: v}}} {
		b, _ := AppendDurable(nil, d)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDurable(b)
		if err != nil {
			return
		}
		again, err := AppendDurable(nil, d)
		if err != nil {
			t.Fatalf("decoded state does not encode: %v", err)
		}
		back, err := DecodeDurable(again)
		if err != nil || !reflect.DeepEqual(back, d) {
			t.Fatalf("re-encoding does not decode to the same state: %v\n in %+v\nout %+v", err, d, back)
		}
	})
}
