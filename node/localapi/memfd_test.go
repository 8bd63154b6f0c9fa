package localapi

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSealedBufferCannotShrink: a buffer made by CreateSealed maps, and
// neither its maker nor anyone holding the fd can shrink it (so the node's
// mapping can never lose its pages: no SIGBUS).
func TestSealedBufferCannotShrink(t *testing.T) {
	m, fd, err := CreateSealed(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, 0); !errors.Is(err, unix.EPERM) {
		t.Fatalf("shrinking a sealed buffer: %v, want EPERM", err)
	}
	if err := unix.Ftruncate(fd, 8192); !errors.Is(err, unix.EPERM) {
		t.Fatalf("growing a sealed buffer: %v, want EPERM", err)
	}
	peer, err := MapFD(fd, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	m.Bytes()[100] = 7
	if peer.Bytes()[100] != 7 {
		t.Fatal("the two mappings do not share memory")
	}
}

// TestMapFDRefusesUnsealed: an unsealed memfd, a regular file, or a size
// beyond the file is refused with an error saying why.
func TestMapFDRefusesUnsealed(t *testing.T) {
	fd, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	unix.Ftruncate(fd, 4096)
	if _, err := MapFD(fd, 4096); err == nil || !strings.Contains(err.Error(), "not sealed") {
		t.Errorf("unsealed memfd: %v, want not sealed", err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "plain"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(4096)
	if _, err := MapFD(int(f.Fd()), 4096); err == nil || !strings.Contains(err.Error(), "memfd") {
		t.Errorf("regular file: %v, want a memfd error", err)
	}
	m, sfd, err := CreateSealed(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer unix.Close(sfd)
	if _, err := MapFD(sfd, 8192); err == nil || !strings.Contains(err.Error(), "holds 4096 bytes") {
		t.Errorf("size beyond the file: %v", err)
	}
}

// TestFDConnPassesDescriptors: a frame written with WriteFrameFD arrives
// with its descriptor; descriptors not taken are closed by DropFDs.
func TestFDConnPassesDescriptors(t *testing.T) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "sock")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b := conn(pair[0]), NewFDConn(conn(pair[1]))
	defer a.Close()
	defer b.Close()
	m, fd, err := CreateSealed(64)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := WriteFrameFD(a, Request{Op: OpRegisterFD, Bytes: 64}, fd); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrameFD(a, Request{Op: OpRegisterFD, Bytes: 64}, fd); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	var req Request
	if err := ReadFrame(b, &req); err != nil || req.Op != OpRegisterFD {
		t.Fatalf("read: %+v, %v", req, err)
	}
	got, ok := b.TakeFD()
	if !ok {
		t.Fatal("no descriptor came with the frame")
	}
	peer, err := MapFD(got, 64)
	unix.Close(got)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	m.Bytes()[3] = 9
	if peer.Bytes()[3] != 9 {
		t.Fatal("the passed descriptor is not the same memory")
	}
	if err := ReadFrame(b, &req); err != nil {
		t.Fatal(err)
	}
	b.DropFDs()
	if _, ok := b.TakeFD(); ok {
		t.Fatal("DropFDs left a descriptor")
	}
}
