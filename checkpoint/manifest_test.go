package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"
)

func TestManifestGolden(t *testing.T) {
	m := Manifest{Step: 7, Size: 1500, ChunkSize: 1024, Chunks: []Hash{{0xaa}, {0xbb}}}
	got, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := "524d434d" + "01" + "0000000000000007" + "00000000000005dc" + "00000400" + "00000002" +
		"aa" + zeros(31) + "bb" + zeros(31)
	if hex.EncodeToString(got) != want {
		t.Fatalf("Encode = %x, want %s", got, want)
	}
	back, err := DecodeManifest(got)
	if err != nil {
		t.Fatal(err)
	}
	if back.Step != 7 || back.Size != 1500 || back.ChunkSize != 1024 || len(back.Chunks) != 2 || back.Chunks[1] != (Hash{0xbb}) {
		t.Fatalf("DecodeManifest = %+v, want %+v", back, m)
	}
	root, _ := m.Root()
	if root != Root(sha256.Sum256(got)) {
		t.Fatalf("Root = %s, want sha256 of the encoding", root)
	}
	if m.ChunkLen(1) != 476 || m.ChunkLen(0) != 1024 || m.ChunkOffset(1) != 1024 {
		t.Fatalf("ChunkLen/ChunkOffset = %d %d %d", m.ChunkLen(0), m.ChunkLen(1), m.ChunkOffset(1))
	}
}

func zeros(n int) string { return hex.EncodeToString(make([]byte, n)) }

func header(step, size uint64, chunkSize, count uint32) []byte {
	b := make([]byte, manifestHeaderLen)
	copy(b, manifestMagic)
	b[4] = ManifestVersion
	binary.BigEndian.PutUint64(b[5:], step)
	binary.BigEndian.PutUint64(b[13:], size)
	binary.BigEndian.PutUint32(b[21:], chunkSize)
	binary.BigEndian.PutUint32(b[25:], count)
	return b
}

func TestDecodeManifestRejects(t *testing.T) {
	good := append(header(1, 2048, 1024, 2), make([]byte, 64)...)
	if _, err := DecodeManifest(good); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short header", good[:10]},
		{"bad magic", append([]byte("XXXX"), good[4:]...)},
		{"bad version", append(append([]byte("RMCM"), 9), good[5:]...)},
		{"size 2^63", append(header(1, 1<<63, 1024, 2), make([]byte, 64)...)},
		{"size above cap", append(header(1, MaxCheckpointSize+1, MaxChunkSize, 2), make([]byte, 64)...)},
		{"count 2^32-1", header(1, 2048, 1024, 0xffffffff)},
		{"count above cap", header(1, 2048, 1024, MaxChunks+1)},
		{"chunk size 0", header(1, 0, 0, 0)},
		{"chunk size 4 GiB", append(header(1, 2048, 0xffffffff, 1), make([]byte, 32)...)},
		{"count disagrees with size", append(header(1, 4096, 1024, 2), make([]byte, 64)...)},
		{"truncated hashes", good[:len(good)-1]},
		{"trailing bytes", append(bytes.Clone(good), 0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeManifest(tc.b)
			if !errors.Is(err, ErrBadManifest) {
				t.Fatalf("DecodeManifest err = %v, want ErrBadManifest", err)
			}
		})
	}
}

func TestParseRoot(t *testing.T) {
	r := Root{1, 2, 3}
	got, err := ParseRoot(r.String())
	if err != nil || got != r {
		t.Fatalf("ParseRoot(%s) = %s, %v", r, got, err)
	}
	for _, bad := range []string{"", "abc", r.String()[:63] + "z"} {
		if _, err := ParseRoot(bad); err == nil {
			t.Errorf("ParseRoot(%q) succeeded, want error", bad)
		}
	}
}

func FuzzDecodeManifest(f *testing.F) {
	m := Manifest{Step: 3, Size: 3000, ChunkSize: 1024, Chunks: make([]Hash, 3)}
	b, _ := m.Encode()
	f.Add(b)
	f.Add(header(1, 1<<62, 1024, MaxChunks))
	f.Add([]byte("RMCM"))
	m.RunID = "run-7"
	b, _ = m.Encode()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(b)
		if err != nil {
			return
		}
		again, err := m.Encode()
		if err != nil {
			t.Fatalf("decoded manifest does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("round trip changed bytes: %x -> %x", b, again)
		}
	})
}
