package node

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func testPeer(t testing.TB, s string) peer.ID {
	id, err := peer.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRoundMsgGolden(t *testing.T) {
	p := testPeer(t, "12D3KooWKq4qtZy11TxxSQJRvdPaMQHB4kJr3FmgtcP4oK1Uspbm")
	m := &msg{Type: msgCommit, Step: 258, Flags: flagApplied, Peers: []member{{ID: p, Inc: 3}}, Reason: "ok"}
	m.Ring[0], m.Ring[31] = 0xaa, 0xbb
	got, err := m.encode()
	if err != nil {
		t.Fatal(err)
	}
	want := "00000060" + // length 96
		"01" + "02" + "0000000000000102" + // version, type commit, step 258
		"aa" + strings.Repeat("00", 30) + "bb" + // ring hash
		"01" + "0001" + // flags, 1 peer
		"26" + hex.EncodeToString([]byte(p)) + "0000000000000003" + // id len 38, id, incarnation 3
		"0002" + "6f6b" // reason "ok"
	if hex.EncodeToString(got) != want {
		t.Errorf("encode:\n got %x\nwant %s", got, want)
	}
	back, err := readMsg(bytes.NewReader(got))
	if err != nil {
		t.Fatal(err)
	}
	if back.Type != m.Type || back.Step != m.Step || back.Ring != m.Ring || back.Flags != m.Flags ||
		len(back.Peers) != 1 || back.Peers[0] != m.Peers[0] || back.Reason != "ok" {
		t.Errorf("round trip: got %+v, want %+v", back, m)
	}
}

func TestRoundMsgRejects(t *testing.T) {
	good, _ := (&msg{Type: msgReady, Step: 1}).encode()
	cases := map[string][]byte{
		"empty":          {},
		"huge length":    {0xff, 0xff, 0xff, 0xff},
		"short body":     {0, 0, 0, 10, 1, 1, 0, 0},
		"truncated":      good[:len(good)-1],
		"bad version":    append(append([]byte{}, good[:4]...), append([]byte{9}, good[5:]...)...),
		"unknown type":   append(append([]byte{}, good[:5]...), append([]byte{99}, good[6:]...)...),
		"too many peers": func() []byte { b := append([]byte{}, good...); b[4+43], b[4+44] = 0xff, 0xff; return b }(),
	}
	for name, b := range cases {
		if _, err := readMsg(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: decoded %x without error", name, b)
		}
	}
}

func FuzzDecodeRoundMsg(f *testing.F) {
	p, _ := peer.Decode("12D3KooWKq4qtZy11TxxSQJRvdPaMQHB4kJr3FmgtcP4oK1Uspbm")
	for _, m := range []*msg{{Type: msgReady, Step: 3}, {Type: msgJoinResp, Flags: 1, Peers: []member{{ID: p, Inc: 1}}}, {Type: msgAck, Reason: "x"}} {
		b, _ := m.encode()
		f.Add(b[4:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMsg(b)
		if err != nil {
			return
		}
		again, err := m.encode()
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		if !bytes.Equal(again[4:], b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, again[4:])
		}
	})
}
