package rounds

import (
	"bytes"
	"encoding/hex"
	"reflect"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

const testPeerID = "12D3KooWKq4qtZy11TxxSQJRvdPaMQHB4kJr3FmgtcP4oK1Uspbm"

func testPeer(t testing.TB) ID {
	id, err := peer.Decode(testPeerID)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// testIDHex is testPeer's encoding: u8 length 38, the ID's bytes.
func testIDHex(t testing.TB) string { return "26" + hex.EncodeToString([]byte(testPeer(t))) }

func TestMessageGolden(t *testing.T) {
	p := testPeer(t)
	m := Message{Type: MsgCommit, Epoch: 1, Step: 258, Ballot: Ballot{N: 3, By: p},
		Value: &Value{Attempt: Ballot{N: 2, By: p}, Ring: []ID{p}, Next: []ID{p},
			Links: []Link{{Egress: 5, Ingress: 6}}, Shares: []uint32{ShareUnits}}}
	got, err := AppendMessage(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	id := testIDHex(t)
	want := "03" + "0a" + "0000000000000001" + "0000000000000102" + // version 3, commit, epoch 1, step 258
		"0000000000000003" + id + // ballot 3
		"0000000000000000" + "00" + // no accepted ballot
		"01" + // a value follows
		"0000000000000002" + id + "0001" + id + "0001" + id + // attempt 2, ring, next
		"0001" + "0000000000000005" + "0000000000000006" + // one link: egress 5, ingress 6
		"0001" + "00100000" // one share: all of it
	if hex.EncodeToString(got) != want {
		t.Errorf("encode:\n got %x\nwant %s", got, want)
	}
	back, err := DecodeMessage(got)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, m) {
		t.Errorf("round trip: got %+v, want %+v", back, m)
	}
	if again, err := AppendMessage([]byte{7}, m); err != nil || !bytes.Equal(again, append([]byte{7}, got...)) {
		t.Errorf("appended to a prefix: got %x, %v; want 07%x", again, err, got)
	}
}

func TestMessageRejects(t *testing.T) {
	good, _ := AppendMessage(nil, Message{Type: MsgReady, Step: 1})
	withValue, _ := AppendMessage(nil, Message{Type: MsgStart, Value: &Value{}})
	cases := map[string][]byte{
		"empty":        {},
		"truncated":    good[:len(good)-1],
		"bad version":  append([]byte{9}, good[1:]...),
		"unknown type": append([]byte{good[0], 99}, good[2:]...),
		"bad peer id":  func() []byte { b := append([]byte{}, good...); b[18+8] = 3; return append(b, 1, 2, 3) }(),
		"too many peers": func() []byte {
			b := append([]byte{}, withValue...)
			b[len(b)-4], b[len(b)-3] = 0xff, 0xff
			return b
		}(),
		"over MaxMessageSize": append(append([]byte{}, good...), make([]byte, MaxMessageSize)...),
	}
	for name, b := range cases {
		if m, err := DecodeMessage(b); err == nil {
			t.Errorf("%s: decoded %+v without error", name, m)
		}
	}
}

func TestMessageTooLarge(t *testing.T) {
	p := testPeer(t)
	many := make([]ID, maxList+1)
	for i := range many {
		many[i] = p
	}
	for name, m := range map[string]Message{
		"long peer id": {Type: MsgOffer, Ballot: Ballot{By: ID(make([]byte, 256))}},
		"long ring":    {Type: MsgStart, Value: &Value{Ring: many}},
		"many shares":  {Type: MsgCommit, Held: &Value{Shares: make([]uint32, maxList+1)}},
		"over 64 KiB":  {Type: MsgCommit, Value: &Value{Ring: many[:maxList], Next: many[:maxList]}},
	} {
		if b, err := AppendMessage(nil, m); err == nil {
			t.Errorf("%s: encoded %d bytes without error", name, len(b))
		}
	}
}

func FuzzMessage(f *testing.F) {
	p, _ := peer.Decode(testPeerID)
	for _, m := range []Message{{Type: MsgReady, Step: 3, Ballot: Ballot{N: 1, By: p}},
		{Type: MsgPromise, Held: &Value{Ring: []ID{p}}, Value: &Value{Next: []ID{p, p}}}} {
		b, _ := AppendMessage(nil, m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			return
		}
		again, err := AppendMessage(nil, m)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		back, err := DecodeMessage(again)
		if err != nil || !reflect.DeepEqual(back, m) {
			t.Fatalf("re-encoding does not decode to the same message: %v\n in %+v\nout %+v", err, m, back)
		}
	})
}
