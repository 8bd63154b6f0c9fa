package checkpoint

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

func TestRequestGolden(t *testing.T) {
	root := Root{0xab}
	if got, want := hex.EncodeToString(encodeRequest(root, -1)), "0000002101ab"+zeros(31); got != want {
		t.Errorf("manifest request = %s, want %s", got, want)
	}
	if got, want := hex.EncodeToString(encodeRequest(root, 258)), "0000002502ab"+zeros(31)+"00000102"; got != want {
		t.Errorf("chunk request = %s, want %s", got, want)
	}
	if got, want := hex.EncodeToString(encodeError(codeOutOfRange, "no")), "00000004ff026e6f"; got != want {
		t.Errorf("error reply = %s, want %s", got, want)
	}
}

func TestReadFrameCaps(t *testing.T) {
	huge := []byte{0xff, 0xff, 0xff, 0xff, 0x82}
	if _, _, err := readFrame(bytes.NewReader(huge), maxResponseLen, nil); !errors.Is(err, ErrBadFrame) {
		t.Fatalf("4 GiB frame: %v, want ErrBadFrame", err)
	}
	if _, _, err := readFrame(bytes.NewReader([]byte{0, 0, 0, 0}), 10, nil); !errors.Is(err, ErrBadFrame) {
		t.Fatalf("empty frame: %v, want ErrBadFrame", err)
	}
	if _, _, err := readFrame(bytes.NewReader([]byte{0, 0, 0, 9, 1, 2}), 10, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated frame: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, _, err := readFrame(bytes.NewReader(nil), 10, nil); err != io.EOF {
		t.Fatalf("clean end: %v, want io.EOF", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add(encodeRequest(Root{1}, 3))
	f.Add(encodeError(codeUnknownRoot, "x"))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, body, err := readFrame(bytes.NewReader(b), maxRequestLen, nil)
		if err != nil {
			return
		}
		if len(body) > maxRequestLen-1 {
			t.Fatalf("body of %d bytes exceeds cap", len(body))
		}
		if _, _, err := decodeRequest(typ, body); err == nil && typ != frameReqManifest && typ != frameReqChunk {
			t.Fatalf("decodeRequest accepted type %#x", typ)
		}
		if typ == frameRespError {
			_ = decodeError(body)
		}
	})
}

// rawStream opens a protocol stream to n's server and returns a reader.
func rawStream(t *testing.T, from, to *tnode) (network.Stream, *bufio.Reader) {
	t.Helper()
	s, err := from.h.NewStream(testCtx(t), to.h.ID(), ProtocolID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Reset() })
	s.SetDeadline(time.Now().Add(testTimeout))
	return s, bufio.NewReader(s)
}

func expectError(t *testing.T, br *bufio.Reader, code byte) {
	t.Helper()
	typ, body, err := readFrame(br, maxResponseLen, nil)
	if err != nil {
		t.Fatalf("reading reply: %v", err)
	}
	var re *RemoteError
	if typ != frameRespError || !errors.As(decodeError(body), &re) || re.Code != code {
		t.Fatalf("reply type %#x body %q, want error code %d", typ, body, code)
	}
}

func TestServerHostileInput(t *testing.T) {
	ctx := testCtx(t)
	srv, cli := newNode(t), newNode(t)
	link(srv.h, cli.h)
	src, _ := writeRandom(t, 3*64<<10, 5)
	root := saveOn(t, src, 1, srv)

	t.Run("out of range and unknown root keep the stream", func(t *testing.T) {
		s, br := rawStream(t, cli, srv)
		s.Write(encodeRequest(root, 3))
		expectError(t, br, codeOutOfRange)
		s.Write(encodeRequest(root, 1<<31))
		expectError(t, br, codeOutOfRange)
		s.Write(encodeRequest(Root{7}, 0))
		expectError(t, br, codeUnknownRoot)
		s.Write(encodeRequest(Root{7}, -1))
		expectError(t, br, codeUnknownRoot)
		s.Write(encodeRequest(root, 2))
		typ, body, err := readFrame(br, maxResponseLen, nil)
		if err != nil || typ != frameRespChunk || binary.BigEndian.Uint32(body) != 2 || len(body) != 4+64<<10 {
			t.Fatalf("valid request after errors: type %#x, %d bytes, %v", typ, len(body), err)
		}
	})
	garbage := map[string][]byte{
		"4 GiB length":     {0xff, 0xff, 0xff, 0xff, 0x02},
		"zero length":      {0, 0, 0, 0},
		"unknown type":     {0, 0, 0, 0x21, 0x7f},
		"short chunk body": {0, 0, 0, 3, 0x02, 1, 2},
	}
	for name, b := range garbage {
		t.Run(name, func(t *testing.T) {
			s, br := rawStream(t, cli, srv)
			s.Write(b)
			if len(b) == 5 && b[4] == 0x7f {
				s.Write(make([]byte, 0x20))
			}
			expectError(t, br, codeBadRequest)
			if _, err := br.ReadByte(); err == nil {
				t.Fatal("stream still open after a bad frame, want it closed")
			}
		})
	}
	// The server keeps serving.
	if _, err := cli.fetcher.Fetch(ctx, root, ids(srv), nil); err != nil {
		t.Fatalf("fetch after hostile input: %v", err)
	}
}

// TestFetchHostileProvider: a provider answering with absurd frames or an
// absurd manifest (whose hash is the announced root) is rejected and
// reported, never trusted.
func TestFetchHostileProvider(t *testing.T) {
	ctx := testCtx(t)
	evil, cli := newNode(t), newNode(t)
	link(evil.h, cli.h)
	evil.stop()
	absurd := header(1, MaxCheckpointSize, MinChunkSize, MaxChunks) // chunk count disagrees with size
	absurd = append(absurd, make([]byte, 32*MaxChunks)...)
	absurdRoot := Root(sha256Sum(absurd))
	evil.h.SetStreamHandler(ProtocolID, func(s network.Stream) {
		defer s.Close()
		var req [maxRequestLen]byte
		_, body, err := readFrame(s, maxRequestLen, req[:])
		if err != nil {
			s.Reset()
			return
		}
		if Root(body[:32]) == absurdRoot {
			b := make([]byte, frameHeaderLen)
			putHeader(b, frameRespManifest, len(absurd))
			s.Write(append(b, absurd...))
			return
		}
		s.Write([]byte{0x7f, 0xff, 0xff, 0xff, frameRespManifest}) // 2 GiB frame
	})
	defer evil.h.RemoveStreamHandler(ProtocolID)

	res, err := cli.fetcher.Fetch(ctx, absurdRoot, ids(evil), nil)
	if !errors.Is(err, ErrNoProvider) || !slicesEqual(res.BadPeers, ids(evil)) {
		t.Fatalf("absurd manifest: %v, bad %v; want ErrNoProvider with the provider reported", err, res.BadPeers)
	}
	res, err = cli.fetcher.Fetch(ctx, Root{3}, ids(evil), nil)
	if !errors.Is(err, ErrNoProvider) || !errors.Is(err, ErrBadFrame) || !slicesEqual(res.BadPeers, ids(evil)) {
		t.Fatalf("2 GiB frame: %v, bad %v; want ErrNoProvider (bad frame) with the provider reported", err, res.BadPeers)
	}
	if got := len(cli.store.List()); got != 0 {
		t.Fatalf("store holds %d entries after hostile fetches, want 0", got)
	}
}

func TestServerPerPeerStreamLimit(t *testing.T) {
	srv, cli := newNode(t), newNode(t)
	link(srv.h, cli.h)
	src, _ := writeRandom(t, 10, 1)
	root := saveOn(t, src, 1, srv)
	limit := LocalServerConfig().MaxStreamsPerPeer
	var open []network.Stream
	for range limit {
		s, br := rawStream(t, cli, srv)
		s.Write(encodeRequest(root, -1))
		if typ, _, err := readFrame(br, maxResponseLen, nil); err != nil || typ != frameRespManifest {
			t.Fatalf("stream within the limit: type %#x, %v", typ, err)
		}
		open = append(open, s)
	}
	s, br := rawStream(t, cli, srv)
	s.Write(encodeRequest(root, -1))
	if _, _, err := readFrame(br, maxResponseLen, nil); err == nil {
		t.Fatalf("stream %d from one peer was served, want it refused", limit+1)
	}
	open[0].Close()
	eventually(t, "a slot frees after a stream closes", func() bool {
		s, br := rawStream(t, cli, srv)
		defer s.Reset()
		s.Write(encodeRequest(root, -1))
		typ, _, err := readFrame(br, maxResponseLen, nil)
		return err == nil && typ == frameRespManifest
	})
}

// TestServerPinsWhatItServes: retention never deletes a checkpoint while a
// stream is serving it.
func TestServerPinsWhatItServes(t *testing.T) {
	srv, cli := newNode(t), newNode(t)
	link(srv.h, cli.h)
	src, _ := writeRandom(t, 2*64<<10, 1)
	old := saveOn(t, src, 1, srv)
	s, br := rawStream(t, cli, srv)
	s.Write(encodeRequest(old, -1))
	if typ, _, err := readFrame(br, maxResponseLen, nil); err != nil || typ != frameRespManifest {
		t.Fatalf("manifest: type %#x, %v", typ, err)
	}
	for i := range LocalStoreConfig().Keep { // enough newer checkpoints to retire old
		p, _ := writeRandom(t, 100, uint64(100+i))
		saveOn(t, p, uint64(10+i), srv)
	}
	s.Write(encodeRequest(old, 1))
	if typ, _, err := readFrame(br, maxResponseLen, nil); err != nil || typ != frameRespChunk {
		t.Fatalf("chunk of a retired checkpoint mid-stream: type %#x, %v; want it still served", typ, err)
	}
	s.CloseWrite()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after CloseWrite: %v, want EOF", err)
	}
	eventually(t, "retired checkpoint pruned after the stream ends", func() bool {
		_, held := srv.store.Stat(old)
		return !held
	})
}
