package localapi

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func TestFrameGolden(t *testing.T) {
	var b bytes.Buffer
	if err := WriteFrame(&b, Request{ID: 1, Op: OpHello, Version: 1}); err != nil {
		t.Fatal(err)
	}
	want := "00000021" + hex.EncodeToString([]byte(`{"id":1,"op":"hello","version":1}`))
	if got := hex.EncodeToString(b.Bytes()); got != want {
		t.Errorf("frame = %s, want %s", got, want)
	}
	var r Request
	if err := ReadFrame(&b, &r); err != nil || r.Op != OpHello || r.ID != 1 || r.Version != 1 {
		t.Errorf("read back %+v, %v", r, err)
	}
}

func TestReadFrameRejects(t *testing.T) {
	var r Request
	if err := ReadFrame(bytes.NewReader([]byte{0x7f, 0, 0, 0}), &r); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("huge frame: %v, want ErrFrameTooLarge", err)
	}
	if err := ReadFrame(bytes.NewReader([]byte{0, 0, 0, 0}), &r); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("empty frame: %v", err)
	}
	if err := ReadFrame(bytes.NewReader([]byte{0, 0, 0, 5, '{'}), &r); err == nil {
		t.Error("short frame decoded")
	}
	if err := ReadFrame(bytes.NewReader([]byte{0, 0, 0, 3, 'a', 'b', 'c'}), &r); err == nil {
		t.Error("garbage decoded")
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0, 0, 0, 0x2a})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Request
		_ = ReadFrame(bytes.NewReader(b), &r)
	})
}
