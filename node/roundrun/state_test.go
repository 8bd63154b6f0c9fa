package roundrun

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ringmesh/ringmesh/node/rounds"
)

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
