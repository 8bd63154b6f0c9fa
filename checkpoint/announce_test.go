package checkpoint

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func testPeerID(t testing.TB) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestAnnouncementGolden(t *testing.T) {
	id, err := peer.Decode("12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf")
	if err != nil {
		t.Fatal(err)
	}
	a := Announcement{Step: 9, Root: Root{0xcd}, Size: 4096, Provider: id}
	got, err := a.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := "524d4341" + "01" + "0000000000000009" + "cd" + zeros(31) + "0000000000001000" + "0026" + hex.EncodeToString([]byte(id))
	if hex.EncodeToString(got) != want {
		t.Fatalf("Encode = %x, want %s", got, want)
	}
	back, err := DecodeAnnouncement(got)
	if err != nil || back != a {
		t.Fatalf("DecodeAnnouncement = %+v, %v; want %+v", back, err, a)
	}
}

func TestAnnouncementRejects(t *testing.T) {
	id := testPeerID(t)
	good, err := Announcement{Step: 1, Root: Root{1}, Size: 10, Provider: id}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"bad magic", mut(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"bad version", mut(func(b []byte) []byte { b[4] = 3; return b })},
		{"absurd size", mut(func(b []byte) []byte { b[45] = 0xff; return b })},
		{"zero root", mut(func(b []byte) []byte { clear(b[13:45]); return b })},
		{"id length too long", mut(func(b []byte) []byte { b[53], b[54] = 0xff, 0xff; return b })},
		{"id length zero", mut(func(b []byte) []byte { b[53], b[54] = 0, 0; return b[:announceHeaderLen] })},
		{"garbage id", mut(func(b []byte) []byte { clear(b[announceHeaderLen:]); return b })},
		{"truncated", good[:len(good)-1]},
		{"trailing", append(bytes.Clone(good), 0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeAnnouncement(tc.b); !errors.Is(err, ErrBadAnnouncement) {
				t.Fatalf("DecodeAnnouncement err = %v, want ErrBadAnnouncement", err)
			}
		})
	}
}

func FuzzDecodeAnnouncement(f *testing.F) {
	id, _ := peer.Decode("12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf")
	b, _ := Announcement{Step: 1, Root: Root{1}, Size: 10, Provider: id}.Encode()
	f.Add(b)
	f.Add([]byte("RMCA"))
	b, _ = Announcement{Step: 1, Root: Root{1}, Size: 10, Provider: id, RunID: "r"}.Encode()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeAnnouncement(b)
		if err != nil {
			return
		}
		again, err := a.Encode()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("round trip: %x -> %x, %v", b, again, err)
		}
	})
}
