package roundrun

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/node/rounds"
)

func testPeer(t testing.TB, s string) peer.ID {
	id, err := peer.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

const testPeerID = "12D3KooWKq4qtZy11TxxSQJRvdPaMQHB4kJr3FmgtcP4oK1Uspbm"

// TestRoundMsgGolden: a frame is the message's length, then the message
// (its layout: rounds.TestMessageGolden).
func TestRoundMsgGolden(t *testing.T) {
	p := testPeer(t, testPeerID)
	m := rounds.Message{Type: rounds.MsgCommit, Epoch: 1, Step: 258, Ballot: rounds.Ballot{N: 3, By: p},
		Value: &rounds.Value{Attempt: rounds.Ballot{N: 2, By: p}, Ring: []peer.ID{p}, Next: []peer.ID{p},
			Links: []rounds.Link{{Egress: 5, Ingress: 6}}, Shares: []uint32{rounds.ShareUnits}}}
	got, err := encodeMsg(m)
	if err != nil {
		t.Fatal(err)
	}
	body, err := rounds.AppendMessage(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	if want := "000000e4" + hex.EncodeToString(body); hex.EncodeToString(got) != want { // length 228
		t.Errorf("encode:\n got %x\nwant %s", got, want)
	}
	back, err := readMsg(bytes.NewReader(got))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, m) {
		t.Errorf("round trip: got %+v, want %+v", back, m)
	}
}

// TestRoundMsgRejects: frames whose length is out of bounds or whose
// body is cut short (malformed messages: rounds.TestMessageRejects). Each
// but the empty stream is malformed: HandleStream counts it.
func TestRoundMsgRejects(t *testing.T) {
	good, _ := encodeMsg(rounds.Message{Type: rounds.MsgReady, Step: 1})
	cases := map[string][]byte{
		"empty":       {},
		"huge length": {0xff, 0xff, 0xff, 0xff},
		"short body":  {0, 0, 0, 10, 2, 1, 0, 0},
		"truncated":   good[:len(good)-1],
		"bad version": append(append([]byte{}, good[:4]...), append([]byte{9}, good[5:]...)...),
	}
	for name, b := range cases {
		_, err := readMsg(bytes.NewReader(b))
		if err == nil {
			t.Errorf("%s: decoded %x without error", name, b)
		} else if len(b) > 0 && !errors.Is(err, rounds.ErrMalformed) {
			t.Errorf("%s: got %v, want an error that wraps rounds.ErrMalformed", name, err)
		}
	}
}
