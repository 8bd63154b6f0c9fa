package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
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

func TestRoundMsgGolden(t *testing.T) {
	p := testPeer(t, testPeerID)
	m := rounds.Message{Type: rounds.MsgCommit, Epoch: 1, Step: 258, Ballot: rounds.Ballot{N: 3, By: p},
		Value: &rounds.Value{Attempt: rounds.Ballot{N: 2, By: p}, Ring: []peer.ID{p}, Next: []peer.ID{p},
			Links: []rounds.Link{{Egress: 5, Ingress: 6}}, Shares: []uint32{rounds.ShareUnits}}}
	got, err := encodeMsg(m)
	if err != nil {
		t.Fatal(err)
	}
	id := "26" + hex.EncodeToString([]byte(p)) // id length 38, id
	want := "000000e4" +                       // length 228
		"03" + "0a" + "0000000000000001" + "0000000000000102" + // version 3, commit, epoch 1, step 258
		"0000000000000003" + id + // ballot 3
		"0000000000000000" + "00" + // no accepted ballot
		"01" + // a value follows
		"0000000000000002" + id + "0001" + id + "0001" + id + // attempt 2, ring, next
		"0001" + "0000000000000005" + "0000000000000006" + // one link: egress 5, ingress 6
		"0001" + "00100000" // one share: all of it
	if hex.EncodeToString(got) != want {
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

func TestRoundMsgRejects(t *testing.T) {
	good, _ := encodeMsg(rounds.Message{Type: rounds.MsgReady, Step: 1})
	withValue, _ := encodeMsg(rounds.Message{Type: rounds.MsgStart, Value: &rounds.Value{}})
	cases := map[string][]byte{
		"empty":        {},
		"huge length":  {0xff, 0xff, 0xff, 0xff},
		"short body":   {0, 0, 0, 10, 2, 1, 0, 0},
		"truncated":    good[:len(good)-1],
		"bad version":  append(append([]byte{}, good[:4]...), append([]byte{9}, good[5:]...)...),
		"unknown type": append(append([]byte{}, good[:5]...), append([]byte{99}, good[6:]...)...),
		"bad peer id":  func() []byte { b := append([]byte{}, good...); b[4+18+8] = 3; return append(b, 1, 2, 3) }(),
		"too many peers": func() []byte {
			b := append([]byte{}, withValue...)
			b[len(b)-4], b[len(b)-3] = 0xff, 0xff
			return b
		}(),
	}
	for name, b := range cases {
		if _, err := readMsg(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: decoded %x without error", name, b)
		}
	}
}

func FuzzDecodeRoundMsg(f *testing.F) {
	p, _ := peer.Decode(testPeerID)
	for _, m := range []rounds.Message{{Type: rounds.MsgReady, Step: 3, Ballot: rounds.Ballot{N: 1, By: p}},
		{Type: rounds.MsgPromise, Held: &rounds.Value{Ring: []peer.ID{p}}, Value: &rounds.Value{Next: []peer.ID{p, p}}}} {
		b, _ := encodeMsg(m)
		f.Add(b[4:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMsg(b)
		if err != nil {
			return
		}
		again, err := encodeMsg(m)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		back, err := decodeMsg(again[4:])
		if err != nil || !reflect.DeepEqual(back, m) {
			t.Fatalf("re-encoding does not decode to the same message: %v\n in %+v\nout %+v", err, m, back)
		}
	})
}

func TestStateRoundTrip(t *testing.T) {
	p := testPeer(t, testPeerID)
	v := rounds.Value{Attempt: rounds.Ballot{N: 4, By: p}, Ring: []peer.ID{p}, Next: []peer.ID{p}}
	big := savedState{Boot: "b", ResultLen: 7, Durable: rounds.Durable{Epoch: 2, Step: 9, List: []peer.ID{p},
		Promised: rounds.Ballot{N: 5, By: p}, Accepted: v.Attempt, Value: &v, Result: &v,
		Last: &rounds.Decided{Step: 8, Value: v}}}
	dir := t.TempDir()
	st, got, err := openStateStore(dir)
	if err != nil || !reflect.DeepEqual(got, savedState{}) {
		t.Fatalf("a fresh dir: %+v, %v; want the zero state", got, err)
	}
	// Longer and shorter states in turn: each write overwrites the older
	// slot, and the newest reads back.
	for i, s := range []savedState{big, {}, big, {Boot: "c"}} {
		if err := st.save(s); err != nil {
			t.Fatal(err)
		}
		_, got, err := openStateStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Errorf("write %d: got %+v, want %+v", i, got, s)
		}
	}
	b, _ := encodeState(savedState{Boot: "x"}, 3)
	b[len(b)-1] ^= 1
	if _, _, err := decodeState(b); err == nil {
		t.Error("a corrupt state decoded without error")
	}
}

// TestStateTornWrite: a crash that tears the newest slot leaves the state
// before it, and the next write goes on from there.
func TestStateTornWrite(t *testing.T) {
	dir := t.TempDir()
	st, _, err := openStateStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	for step := uint64(1); step <= 3; step++ {
		if err := st.save(savedState{Durable: rounds.Durable{Step: step}}); err != nil {
			t.Fatal(err)
		}
	}
	// Step 3 went to slot 1 (sequence 3): tear it.
	f, err := os.OpenFile(slotFile(dir, 1), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff, 0xff}, 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	st, got, err := openStateStore(dir)
	if err != nil || got.Durable.Step != 2 {
		t.Fatalf("after a torn write: step %d, %v; want step 2 from the other slot", got.Durable.Step, err)
	}
	if err := st.save(savedState{Durable: rounds.Durable{Step: 3}}); err != nil {
		t.Fatal(err)
	}
	if _, got, err = openStateStore(dir); err != nil || got.Durable.Step != 3 {
		t.Fatalf("rewritten: step %d, %v; want 3", got.Durable.Step, err)
	}
	// Both slots corrupt cannot come from one crash: a clear error, not a
	// silent zero state, even beside a version-1 file.
	for i := range stateSlots {
		os.WriteFile(slotFile(dir, i), []byte("junk"), 0o600)
	}
	b, _ := encodeState(savedState{Durable: rounds.Durable{Step: 1}}, 0)
	os.WriteFile(filepath.Join(dir, stateFile), b, 0o600)
	if _, _, err := openStateStore(dir); err == nil {
		t.Error("two corrupt slots opened without error")
	}
}

// TestStateFirstWriteTorn: the very first slot write (slot 1) torn by a
// crash leaves the state before it: none, or the version-1 file's, and
// the node starts.
func TestStateFirstWriteTorn(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(slotFile(dir, 1), []byte{0, 0}, 0o600); err != nil {
		t.Fatal(err)
	}
	st, got, err := openStateStore(dir)
	if err != nil || !reflect.DeepEqual(got, savedState{}) {
		t.Fatalf("first write torn: %+v, %v; want the zero state", got, err)
	}
	if err := st.save(savedState{Durable: rounds.Durable{Step: 5}}); err != nil {
		t.Fatal(err)
	}
	if _, got, err = openStateStore(dir); err != nil || got.Durable.Step != 5 {
		t.Fatalf("after rewriting: step %d, %v; want 5", got.Durable.Step, err)
	}
}

// TestStateVersion1: the single rounds.state file of earlier versions is
// read when there are no slots.
func TestStateVersion1(t *testing.T) {
	dir := t.TempDir()
	s := savedState{Boot: "old", Durable: rounds.Durable{Epoch: 1, Step: 41}}
	b, _ := encodeState(s, 0)
	// A version-1 encoding: no sequence number, its own checksum.
	v1 := append([]byte{stateVersion1}, b[9:len(b)-sha256.Size]...)
	sum := sha256.Sum256(v1)
	if err := os.WriteFile(filepath.Join(dir, stateFile), append(v1, sum[:]...), 0o600); err != nil {
		t.Fatal(err)
	}
	st, got, err := openStateStore(dir)
	if err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("version 1 file: %+v, %v; want %+v", got, err, s)
	}
	// The first slot write retires the old file: it is never read in the
	// slots' place again.
	if err := st.save(savedState{Durable: rounds.Durable{Epoch: 1, Step: 42}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile)); !os.IsNotExist(err) {
		t.Errorf("version 1 file still there after a slot write: %v", err)
	}
	if _, got, err = openStateStore(dir); err != nil || got.Durable.Step != 42 {
		t.Fatalf("after the slot write: step %d, %v; want 42", got.Durable.Step, err)
	}
}
