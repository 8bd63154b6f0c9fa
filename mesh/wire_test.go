package mesh

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// fixedID returns a deterministic Ed25519 peer ID for seed.
func fixedID(t testing.TB, seed byte) peer.ID {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{seed}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func sampleHeartbeat(t testing.TB) *heartbeat {
	return &heartbeat{
		Mesh: "lab", Sender: fixedID(t, 1), Incarnation: 7, State: Alive,
		Addrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/10.0.0.1/tcp/4001")},
		Caps: Capabilities{CPUs: 2, MemoryBytes: 1 << 30, GPUs: []GPU{
			{Name: "A100", UUID: "GPU-1", MemoryBytes: 80 << 30, UtilizationPct: 50},
		}},
		Payload: []byte("step=3"),
	}
}

func sampleFailure(t testing.TB) *failureNotice {
	return &failureNotice{Mesh: "lab", Sender: fixedID(t, 1), Kind: Dead, Subject: fixedID(t, 2), Incarnation: 9}
}

func TestEncodeHeartbeatGolden(t *testing.T) {
	b, err := encodeHeartbeat(nil, sampleHeartbeat(t))
	if err != nil {
		t.Fatal(err)
	}
	id := []byte(fixedID(t, 1))
	want := concat(
		"0101",                       // version 1, type heartbeat
		"036c6162",                   // mesh "lab"
		"26", hex.EncodeToString(id), // sender (38-byte Ed25519 peer ID)
		"0000000000000007",             // incarnation
		"01",                           // alive
		"01", "08", "040a000001060fa1", // 1 addr: /ip4/10.0.0.1/tcp/4001
		"0002",                                                       // cpus
		"0000000040000000",                                           // memory
		"01", "0441313030", "054750552d31", "0000001400000000", "32", // 1 GPU
		"00000006", "737465703d33", // payload "step=3"
	)
	if got := hex.EncodeToString(b); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if len(id) != 0x26 {
		t.Fatalf("peer ID length %d, golden assumes 38", len(id))
	}
}

func TestEncodeFailureGolden(t *testing.T) {
	b, err := encodeFailure(nil, sampleFailure(t))
	if err != nil {
		t.Fatal(err)
	}
	want := concat(
		"0102", "036c6162",
		"26", hex.EncodeToString([]byte(fixedID(t, 1))),
		"03", // dead
		"26", hex.EncodeToString([]byte(fixedID(t, 2))),
		"0000000000000009",
	)
	if got := hex.EncodeToString(b); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func concat(parts ...string) string {
	var b bytes.Buffer
	for _, p := range parts {
		b.WriteString(p)
	}
	return b.String()
}

func TestHeartbeatRoundTrip(t *testing.T) {
	in := sampleHeartbeat(t)
	b, err := encodeHeartbeat(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeHeartbeat(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("got %+v, want %+v", out, in)
	}
}

func TestFailureRoundTrip(t *testing.T) {
	in := sampleFailure(t)
	b, err := encodeFailure(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeFailure(b)
	if err != nil {
		t.Fatal(err)
	}
	if *in != *out {
		t.Errorf("got %+v, want %+v", out, in)
	}
}

func TestDecodeRejects(t *testing.T) {
	hb, _ := encodeHeartbeat(nil, sampleHeartbeat(t))
	fn, _ := encodeFailure(nil, sampleFailure(t))
	mut := func(b []byte, i int, v byte) []byte {
		c := bytes.Clone(b)
		c[i] = v
		return c
	}
	tests := []struct {
		name string
		dec  func([]byte) error
		in   []byte
	}{
		{"empty heartbeat", decHB, nil},
		{"bad version", decHB, mut(hb, 0, 2)},
		{"failure as heartbeat", decHB, fn},
		{"truncated heartbeat", decHB, hb[:len(hb)-1]},
		{"trailing byte", decHB, append(bytes.Clone(hb), 0)},
		{"mesh name too long", decHB, mut(hb, 2, 200)},
		{"bad state", decHB, mut(hb, 2+4+39+8, 9)},
		{"too many addrs", decHB, mut(hb, 2+4+39+8+1, 17)},
		{"payload length over cap", decHB, append(bytes.Clone(hb[:len(hb)-10]), 0xff, 0xff, 0xff, 0xff)},
		{"heartbeat as failure", decF, hb},
		{"bad kind", decF, mut(fn, 2+4+39, byte(Alive))},
		{"bad subject", decF, mut(fn, 2+4+39+1+1, 0xff)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.dec(tt.in); !errors.Is(err, ErrDecode) {
				t.Errorf("got %v, want ErrDecode", err)
			}
		})
	}
}

func TestProbeMessages(t *testing.T) {
	target := fixedID(t, 2)
	b, err := encodeProbeRequest(nil, &probeRequest{Mesh: "lab", Target: target})
	if err != nil {
		t.Fatal(err)
	}
	want := concat("0103", "036c6162", "26", hex.EncodeToString([]byte(target)))
	if got := hex.EncodeToString(b); got != want {
		t.Errorf("request: got  %s\nwant %s", got, want)
	}
	if len(b) > maxProbeRequestLen {
		t.Errorf("request of %d bytes, over maxProbeRequestLen %d", len(b), maxProbeRequestLen)
	}
	q, err := decodeProbeRequest(b)
	if err != nil || q.Mesh != "lab" || q.Target != target {
		t.Errorf("request round trip: %+v, %v", q, err)
	}
	for _, reached := range []bool{true, false} {
		r := encodeProbeReply(nil, reached)
		if len(r) != maxProbeReplyLen {
			t.Errorf("reply of %d bytes, want %d", len(r), maxProbeReplyLen)
		}
		if got, err := decodeProbeReply(r); err != nil || got != reached {
			t.Errorf("reply round trip %v: %v, %v", reached, got, err)
		}
	}
	for name, in := range map[string][]byte{
		"trailing byte": append(bytes.Clone(b), 0),
		"truncated":     b[:len(b)-1],
		"reply":         encodeProbeReply(nil, true),
	} {
		if _, err := decodeProbeRequest(in); !errors.Is(err, ErrDecode) {
			t.Errorf("request, %s: got %v, want ErrDecode", name, err)
		}
	}
	for name, in := range map[string][]byte{
		"bad result":    {1, typeProbeReply, 0},
		"trailing byte": {1, typeProbeReply, probeReached, 0},
		"request":       b,
	} {
		if _, err := decodeProbeReply(in); !errors.Is(err, ErrDecode) {
			t.Errorf("reply, %s: got %v, want ErrDecode", name, err)
		}
	}
}

// FuzzDecodeProbeRequest: as FuzzDecodeHeartbeat, for probe requests.
func FuzzDecodeProbeRequest(f *testing.F) {
	b, _ := encodeProbeRequest(nil, &probeRequest{Mesh: "lab", Target: fixedID(f, 2)})
	f.Add(b)
	f.Add([]byte{1, 3})
	f.Fuzz(func(t *testing.T, in []byte) {
		q, err := decodeProbeRequest(in)
		if err != nil {
			return
		}
		out, err := encodeProbeRequest(nil, q)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(in, out) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", in, out)
		}
	})
}

func decHB(b []byte) error { _, err := decodeHeartbeat(b); return err }
func decF(b []byte) error  { _, err := decodeFailure(b); return err }

func TestEncodeHeartbeatTruncatesLists(t *testing.T) {
	h := sampleHeartbeat(t)
	for range 20 {
		h.Addrs = append(h.Addrs, h.Addrs[0])
	}
	for range 20 {
		h.Caps.GPUs = append(h.Caps.GPUs, h.Caps.GPUs[0])
	}
	b, err := encodeHeartbeat(nil, h)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeHeartbeat(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Addrs) != maxAddrs || len(out.Caps.GPUs) != maxGPUs {
		t.Errorf("got %d addrs, %d GPUs; want %d, %d", len(out.Addrs), len(out.Caps.GPUs), maxAddrs, maxGPUs)
	}
	if len(b) > maxHeartbeatOverhead+len(h.Payload) {
		t.Errorf("encoded %d bytes, over the bound %d", len(b), maxHeartbeatOverhead+len(h.Payload))
	}
}

// FuzzDecodeHeartbeat: the decoder never panics, and whatever it accepts
// re-encodes to the same bytes (the encoding is canonical).
func FuzzDecodeHeartbeat(f *testing.F) {
	b, _ := encodeHeartbeat(nil, sampleHeartbeat(f))
	f.Add(b)
	f.Add([]byte{1, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := decodeHeartbeat(in)
		if err != nil {
			return
		}
		out, err := encodeHeartbeat(nil, h)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(in, out) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", in, out)
		}
	})
}

// FuzzDecodeFailure: as FuzzDecodeHeartbeat, for failure notices.
func FuzzDecodeFailure(f *testing.F) {
	b, _ := encodeFailure(nil, sampleFailure(f))
	f.Add(b)
	f.Add([]byte{1, 2})
	f.Fuzz(func(t *testing.T, in []byte) {
		n, err := decodeFailure(in)
		if err != nil {
			return
		}
		out, err := encodeFailure(nil, n)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(in, out) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", in, out)
		}
	})
}
