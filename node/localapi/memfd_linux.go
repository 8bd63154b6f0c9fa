package localapi

import (
	"fmt"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// RequiredSeals are the seals a buffer's memfd must carry before the node
// maps it: a file that cannot shrink cannot take mapped pages away from
// under the node (SIGBUS); one that cannot grow keeps its size as
// registered.
const RequiredSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW

// CreateSealed creates an anonymous shared-memory file (memfd) of size
// bytes, seals it against shrinking and growing, and maps it. It returns
// the mapping and the file descriptor to pass to the node (register_fd);
// the caller closes fd once the node has it. Nothing is left in any file
// system however either process ends.
func CreateSealed(size int64) (*Mapping, int, error) {
	if size <= 0 || size%4 != 0 {
		return nil, -1, fmt.Errorf("localapi: buffer size %d is not a positive multiple of 4", size)
	}
	fd, err := unix.MemfdCreate("ringmesh-buffer", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, -1, fmt.Errorf("localapi: memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		unix.Close(fd)
		return nil, -1, fmt.Errorf("localapi: size buffer: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, RequiredSeals|unix.F_SEAL_SEAL); err != nil {
		unix.Close(fd)
		return nil, -1, fmt.Errorf("localapi: seal buffer: %w", err)
	}
	m, err := MapFD(fd, size)
	if err != nil {
		unix.Close(fd)
		return nil, -1, err
	}
	return m, fd, nil
}

// MapFD maps the first size bytes of the memfd fd (MAP_SHARED). It refuses
// a file that is not sealed with RequiredSeals or is smaller than size.
// fd stays open; the caller closes it.
func MapFD(fd int, size int64) (*Mapping, error) {
	if size <= 0 || size%4 != 0 {
		return nil, fmt.Errorf("localapi: buffer size %d is not a positive multiple of 4", size)
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("localapi: buffer is not a sealable memfd (%v): create it with memfd_create(MFD_ALLOW_SEALING)", err)
	}
	if seals&RequiredSeals != RequiredSeals {
		return nil, fmt.Errorf("localapi: buffer memfd is not sealed against shrinking and growing (seals %#x): add F_SEAL_SHRINK|F_SEAL_GROW", seals)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("localapi: stat buffer: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("localapi: buffer is not a regular file")
	}
	if st.Size < size {
		return nil, fmt.Errorf("localapi: buffer holds %d bytes, %d asked", st.Size, size)
	}
	data, err := syscall.Mmap(fd, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("localapi: mmap buffer: %w", err)
	}
	return &Mapping{data: data}, nil
}

// WriteFrameFD writes v as one frame on c with fd attached (SCM_RIGHTS).
func WriteFrameFD(c *net.UnixConn, v any, fd int) error {
	buf, err := encodeFrame(v)
	if err != nil {
		return err
	}
	n, oobn, err := c.WriteMsgUnix(buf, unix.UnixRights(fd), nil)
	if err == nil && (n != len(buf) || oobn == 0) {
		err = fmt.Errorf("localapi: short write of a frame with a descriptor")
	}
	return err
}

// maxFDs bounds the descriptors one connection may have waiting: more are
// closed on arrival.
const maxFDs = 4

// FDConn reads frames from a unix socket and keeps the file descriptors
// that arrive with them (SCM_RIGHTS) for TakeFD. Descriptors nobody takes
// are closed by DropFDs and Close.
type FDConn struct {
	*net.UnixConn
	oob []byte
	mu  sync.Mutex
	fds []int
}

// NewFDConn wraps c.
func NewFDConn(c *net.UnixConn) *FDConn {
	return &FDConn{UnixConn: c, oob: make([]byte, unix.CmsgSpace(4*maxFDs))}
}

// Read reads data and collects any descriptors sent with it.
func (c *FDConn) Read(p []byte) (int, error) {
	n, oobn, flags, _, err := c.ReadMsgUnix(p, c.oob)
	if oobn > 0 {
		c.collect(c.oob[:oobn])
	}
	if err == nil && flags&unix.MSG_CTRUNC != 0 {
		// Descriptors beyond maxFDs were dropped by the kernel (closed).
		c.DropFDs()
	}
	return n, err
}

func (c *FDConn) collect(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if len(c.fds) >= maxFDs {
				unix.Close(fd)
				continue
			}
			c.fds = append(c.fds, fd)
		}
	}
}

// TakeFD returns the oldest descriptor received and not taken yet; the
// caller owns it.
func (c *FDConn) TakeFD() (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.fds) == 0 {
		return -1, false
	}
	fd := c.fds[0]
	c.fds = c.fds[1:]
	return fd, true
}

// DropFDs closes the descriptors received and not taken.
func (c *FDConn) DropFDs() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, fd := range c.fds {
		unix.Close(fd)
	}
	c.fds = nil
}

// Close closes the connection and every descriptor not taken.
func (c *FDConn) Close() error {
	c.DropFDs()
	return c.UnixConn.Close()
}
