package localapi

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

// Mapping is a shared-memory file mapped read-write into this process.
type Mapping struct {
	Path string
	data []byte
}

// Map maps the first size bytes of the regular file at path (MAP_SHARED), so
// writes by either side are seen by the other without a copy.
func Map(path string, size int64) (*Mapping, error) {
	if size <= 0 || size%4 != 0 {
		return nil, fmt.Errorf("localapi: buffer size %d is not a positive multiple of 4", size)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("localapi: open buffer: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("localapi: stat buffer: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("localapi: buffer %s is not a regular file", path)
	}
	if st.Size() < size {
		return nil, fmt.Errorf("localapi: buffer %s holds %d bytes, %d asked", path, st.Size(), size)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("localapi: mmap buffer: %w", err)
	}
	return &Mapping{Path: path, data: data}, nil
}

// Bytes is the mapped memory.
func (m *Mapping) Bytes() []byte { return m.data }

// Float32s views bytes [off, off+4*count) as float32s (native byte order, as
// numpy and torch lay them out). It returns an error when the range is out of
// bounds or misaligned.
func (m *Mapping) Float32s(off, count int64) ([]float32, error) {
	size := int64(len(m.data))
	// count > (size-off)/4, not off+4*count > size: that overflows.
	if off < 0 || count < 0 || off%4 != 0 || off > size || count > (size-off)/4 {
		return nil, fmt.Errorf("localapi: range of %d float32s at byte %d outside buffer of %d bytes or misaligned", count, off, size)
	}
	if count == 0 {
		return []float32{}, nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&m.data[off])), count), nil
}

// Close unmaps the memory.
func (m *Mapping) Close() error {
	if m.data == nil {
		return nil
	}
	err := syscall.Munmap(m.data)
	m.data = nil
	return err
}

// CreateShm creates a shared-memory file of size bytes in /dev/shm (or in dir
// when /dev/shm is missing) and maps it.
func CreateShm(dir string, size int64) (*Mapping, error) {
	if dir == "" {
		dir = "/dev/shm"
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			dir = os.TempDir()
		}
	}
	f, err := os.CreateTemp(dir, "ringmesh-*.buf")
	if err != nil {
		return nil, fmt.Errorf("localapi: create buffer: %w", err)
	}
	path := f.Name()
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("localapi: size buffer: %w", err)
	}
	m, err := Map(path, size)
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return m, nil
}
