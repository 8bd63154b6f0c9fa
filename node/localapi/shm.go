package localapi

import (
	"fmt"
	"syscall"
	"unsafe"
)

// Mapping is a shared-memory file (a sealed memfd) mapped read-write into
// this process.
type Mapping struct {
	data []byte
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
