package allreduce

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"runtime"
	"strings"
	"testing"
)

func goldenHeader() Header {
	h := Header{
		Version: Version, DType: BFloat16, Op: WeightedMean, Lane: 1, Lanes: 2,
		Step: 0x0102030405060708, Attempt: 9, Count: 1000, ChunkBytes: 1 << 20, Part: 2, Parts: 5, Flags: FlagTrustedNetwork, Offset: 0x1122334455, Mesh: "lab",
	}
	for i := range h.MembersHash {
		h.MembersHash[i] = byte(i)
		h.ScheduleHash[i] = byte(0xa0 + i)
	}
	return h
}

func TestHeaderGolden(t *testing.T) {
	got := hex.EncodeToString(AppendHeader(nil, goldenHeader()))
	want := "524d4152" + // magic
		"05" + "02" + "03" + "01" + "02" + "03" + // version dtype op lane lanes meshlen
		"0102030405060708" + // step
		"00000009" + // attempt
		"00000000000003e8" + // count
		"00100000" + // chunk bytes
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" + // members hash
		"a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf" + // schedule hash
		"00000002" + "00000005" + // part, parts
		"01" + // flags: trusted network
		"0000001122334455" + // part offset
		"6c6162" // mesh
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	h, err := DecodeHeader(AppendHeader(nil, goldenHeader()))
	if err != nil || h != goldenHeader() {
		t.Fatalf("got %+v, %v; want %+v", h, err, goldenHeader())
	}
	h, err = ReadHeader(bytes.NewReader(AppendHeader(nil, goldenHeader())))
	if err != nil || h != goldenHeader() {
		t.Fatalf("ReadHeader: got %+v, %v; want %+v", h, err, goldenHeader())
	}
}

func TestHeaderRejects(t *testing.T) {
	good := AppendHeader(nil, goldenHeader())
	mut := func(i int, v byte) []byte {
		b := append([]byte(nil), good...)
		b[i] = v
		return b
	}
	cases := map[string][]byte{
		"short":    good[:10],
		"magic":    mut(0, 'X'),
		"version":  mut(4, 1),
		"mesh len": mut(9, MaxMeshLen+1),
		"trailing": append(append([]byte(nil), good...), 0),
	}
	for name, b := range cases {
		if _, err := DecodeHeader(b); !errors.Is(err, ErrBadHeader) {
			t.Errorf("%s: got %v, want ErrBadHeader", name, err)
		}
	}
}

func TestMismatchNamesField(t *testing.T) {
	want := goldenHeader()
	cases := map[string]func(*Header){
		"mesh":            func(h *Header) { h.Mesh = "other" },
		"members_hash":    func(h *Header) { h.MembersHash[3]++ },
		"dtype":           func(h *Header) { h.DType = Float32 },
		"op":              func(h *Header) { h.Op = Sum },
		"count":           func(h *Header) { h.Count++ },
		"chunk_bytes":     func(h *Header) { h.ChunkBytes *= 2 },
		"lanes":           func(h *Header) { h.Lanes = 4 },
		"schedule_hash":   func(h *Header) { h.ScheduleHash[0]++ },
		"part":            func(h *Header) { h.Part++ },
		"parts":           func(h *Header) { h.Parts++ },
		"part_offset":     func(h *Header) { h.Offset += 50 },
		"trusted_network": func(h *Header) { h.Flags &^= FlagTrustedNetwork },
		"flags":           func(h *Header) { h.Flags |= 0x80 },
	}
	// Fields a retry can change (the round's identity) are not settings.
	identity := map[string]bool{"mesh": true, "members_hash": true, "part": true}
	for field, f := range cases {
		got := want
		f(&got)
		m, settings := mismatch(want, got)
		if !strings.HasPrefix(m, field+":") {
			t.Errorf("got %q, want a mismatch naming %s", m, field)
		}
		if settings == identity[field] {
			t.Errorf("%s: settings = %v, want %v", field, settings, !identity[field])
		}
	}
	if m, _ := mismatch(want, want); m != "" {
		t.Errorf("equal headers: got %q, want no mismatch", m)
	}
}

func TestControlGolden(t *testing.T) {
	cases := []struct {
		c    control
		want string
	}{
		{control{Type: ctrlAck}, "01"},
		{control{Type: ctrlReject, Code: rejectHeader, Reason: "op"}, "0201" + "0002" + "6f70"},
		{control{Type: ctrlAbort, Code: causeHeader, Origin: "ab", Reason: "x"}, "03" + "01" + "0002" + "6162" + "0001" + "78"},
		{control{Type: ctrlLane, Code: laneNone}, "04" + "00"},
		{control{Type: ctrlLane, Code: laneOffer, Port: 0x1234, Token: [laneTokenLen]byte{1, 2}},
			"04" + "01" + "1234" + "0102" + strings.Repeat("00", laneTokenLen-2)},
	}
	for _, c := range cases {
		b := appendControl(nil, c.c)
		if got := hex.EncodeToString(b); got != c.want {
			t.Errorf("got %s, want %s", got, c.want)
		}
		back, err := readControl(bytes.NewReader(b))
		if err != nil || back != c.c {
			t.Errorf("decode: got %+v, %v; want %+v", back, err, c.c)
		}
	}
}

func TestFrameGoldenAndCap(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteFrame(&buf, []byte{0xaa, 0xbb}); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(buf.Bytes()); got != "00000002aabb" {
		t.Fatalf("got %s, want 00000002aabb", got)
	}
	p, err := ReadFrame(bytes.NewReader(buf.Bytes()), 2, nil)
	if err != nil || !bytes.Equal(p, []byte{0xaa, 0xbb}) {
		t.Fatalf("got %x, %v; want aabb", p, err)
	}
	// A length over the cap is rejected before the payload is read or
	// anything is allocated.
	huge := []byte{0xff, 0xff, 0xff, 0xff, 1}
	if _, err := ReadFrame(bytes.NewReader(huge), MaxChunkBytes, nil); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v, want ErrFrameTooLarge", err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _ = ReadFrame(bytes.NewReader(huge), MaxChunkBytes, nil)
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Fatalf("a rejected 4 GiB frame allocated %d bytes", d)
	}
	// readExact wants exactly the expected length.
	if err := readExact(bytes.NewReader(buf.Bytes()), make([]byte, 3)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("short frame: got %v, want ErrProtocol", err)
	}
	if err := readExact(bytes.NewReader(buf.Bytes()[:5]), make([]byte, 2)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated frame: got %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestBF16(t *testing.T) {
	cases := []struct {
		in   float32
		want uint16
	}{
		{1, 0x3f80}, {-2, 0xc000}, {0, 0}, {float32(math.Inf(1)), 0x7f80},
		{math.Float32frombits(0x3f808000), 0x3f80}, // tie -> even
		{math.Float32frombits(0x3f818000), 0x3f82}, // tie -> even (up)
		{math.Float32frombits(0x3f808001), 0x3f81}, // above tie
	}
	for _, c := range cases {
		if got := F32ToBF16(c.in); got != c.want {
			t.Errorf("F32ToBF16(%v): got %#04x, want %#04x", c.in, got, c.want)
		}
	}
	if got := F32ToBF16(float32(math.NaN())); BF16ToF32(got) == BF16ToF32(got) {
		t.Errorf("NaN: got %#04x, want a NaN", got)
	}
}

func TestF16(t *testing.T) {
	cases := []struct {
		in   float32
		want uint16
	}{
		{1, 0x3c00}, {-2, 0xc000}, {0, 0}, {65504, 0x7bff}, {65520, 0x7c00}, // rounds to inf
		{float32(math.Inf(-1)), 0xfc00},
		{float32(math.Pow(2, -24)), 0x0001},       // smallest subnormal
		{float32(math.Pow(2, -25)), 0x0000},       // tie -> even (0)
		{float32(1.5 * math.Pow(2, -24)), 0x0002}, // tie -> even (2)
		{float32(math.Pow(2, -14)), 0x0400},       // smallest normal
		{1 + float32(math.Pow(2, -11)), 0x3c00},   // tie -> even
		{1 + 3*float32(math.Pow(2, -11)), 0x3c02},
	}
	for _, c := range cases {
		if got := F32ToF16(c.in); got != c.want {
			t.Errorf("F32ToF16(%v): got %#04x, want %#04x", c.in, got, c.want)
		}
	}
	// Every finite half round-trips exactly.
	for h := range 1 << 16 {
		if h&0x7c00 == 0x7c00 {
			continue
		}
		if got := F32ToF16(F16ToF32(uint16(h))); got != uint16(h) {
			t.Fatalf("round trip %#04x: got %#04x", h, got)
		}
	}
}

func FuzzDecodeHeader(f *testing.F) {
	f.Add(AppendHeader(nil, goldenHeader()))
	f.Add([]byte("RMAR"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHeader(b)
		if err != nil {
			return
		}
		if again := AppendHeader(nil, h); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding: got %x, want %x", again, b)
		}
		r, err := ReadHeader(bytes.NewReader(b))
		if err != nil || r != h {
			t.Fatalf("ReadHeader: got %+v, %v; want %+v", r, err, h)
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, 1, 2}, 4)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, 1<<20)
	f.Add([]byte{0, 0}, 0)
	f.Fuzz(func(t *testing.T, b []byte, max int) {
		if max < 0 || max > 1<<16 {
			max = 1 << 16
		}
		p, err := ReadFrame(bytes.NewReader(b), max, nil)
		if err != nil {
			return
		}
		if len(p) > max {
			t.Fatalf("got %d bytes, cap %d", len(p), max)
		}
		if !bytes.Equal(p, b[4:4+len(p)]) {
			t.Fatalf("payload %x does not match input %x", p, b)
		}
	})
}

func FuzzReadControl(f *testing.F) {
	f.Add(appendControl(nil, control{Type: ctrlAbort, Origin: "ab", Reason: "x"}))
	f.Add(appendControl(nil, control{Type: ctrlReject, Code: 1, Reason: "op"}))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := readControl(bytes.NewReader(b))
		if err != nil {
			return
		}
		if again := appendControl(nil, c); !bytes.Equal(again, b[:len(again)]) {
			t.Fatalf("re-encoding: got %x, want prefix of %x", again, b)
		}
	})
}
