// Package nvml is the small part of NVIDIA's management library (NVML) that
// ringmesh reads to advertise a host's GPUs: the device count, and each
// device's name, UUID, memory and utilization.
//
// It loads libnvidia-ml.so.1 at run time through purego (dlopen without
// cgo), so a host without the driver is a CPU host rather than a failed
// start, and building ringmesh compiles no C: go-nvml, used before, compiled
// its whole generated binding and printed 29 deprecation warnings on every
// plain `go build`. The names follow go-nvml's so that NVML's documentation
// reads across.
package nvml

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/ebitengine/purego"
)

// Return is an nvmlReturn_t.
type Return int32

// The nvmlReturn_t values ringmesh tells apart.
const (
	Success               Return = 0
	ErrorUninitialized    Return = 1
	ErrorNotSupported     Return = 3
	ErrorLibraryNotFound  Return = 12
	ErrorFunctionNotFound Return = 13
	ErrorGPUIsLost        Return = 15
)

func (r Return) String() string {
	switch r {
	case Success:
		return "success"
	case ErrorUninitialized:
		return "uninitialized"
	case ErrorNotSupported:
		return "not supported"
	case ErrorLibraryNotFound:
		return "library not found"
	case ErrorFunctionNotFound:
		return "function not found"
	case ErrorGPUIsLost:
		return "GPU is lost"
	}
	return fmt.Sprintf("nvml return %d", int32(r))
}

// Memory is an nvmlMemory_t (the v1 layout): bytes.
type Memory struct {
	Total, Free, Used uint64
}

// Utilization is an nvmlUtilization_t: percent over the last sample period.
type Utilization struct {
	Gpu, Memory uint32
}

// Interface is the library: Init before anything else, Shutdown after.
type Interface interface {
	Init() Return
	Shutdown() Return
	DeviceGetCount() (int, Return)
	DeviceGetHandleByIndex(i int) (Device, Return)
}

// Device is one GPU's handle.
type Device interface {
	GetName() (string, Return)
	GetUUID() (string, Return)
	GetMemoryInfo() (Memory, Return)
	GetUtilizationRates() (Utilization, Return)
}

// libName is the driver's NVML, versioned as the driver installs it.
const libName = "libnvidia-ml.so.1"

// stringLen covers NVML_DEVICE_NAME_V2_BUFFER_SIZE (96) and
// NVML_DEVICE_UUID_V2_BUFFER_SIZE (80).
const stringLen = 96

// New returns the real library. Nothing is loaded until Init.
func New() Interface { return &library{path: libName} }

type library struct {
	path string // dlopen's argument

	mu     sync.Mutex
	handle uintptr

	initFn        func() Return
	shutdownFn    func() Return
	countFn       func(*uint32) Return
	handleFn      func(uint32, *uintptr) Return
	nameFn        func(uintptr, *byte, uint32) Return
	uuidFn        func(uintptr, *byte, uint32) Return
	memoryFn      func(uintptr, *Memory) Return
	utilizationFn func(uintptr, *Utilization) Return
}

// Init loads the library (ErrorLibraryNotFound without a driver) and
// initializes NVML.
func (l *library) Init() Return {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.handle == 0 {
		h, err := purego.Dlopen(l.path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			return ErrorLibraryNotFound
		}
		if r := l.bind(h); r != Success {
			purego.Dlclose(h)
			return r
		}
		l.handle = h
	}
	return l.initFn()
}

// bind resolves every symbol before any is called: a driver too old for one
// of them is ErrorFunctionNotFound, not a crash.
func (l *library) bind(h uintptr) Return {
	syms := []struct {
		name string
		fn   any
	}{
		{"nvmlInit_v2", &l.initFn},
		{"nvmlShutdown", &l.shutdownFn},
		{"nvmlDeviceGetCount_v2", &l.countFn},
		{"nvmlDeviceGetHandleByIndex_v2", &l.handleFn},
		{"nvmlDeviceGetName", &l.nameFn},
		{"nvmlDeviceGetUUID", &l.uuidFn},
		{"nvmlDeviceGetMemoryInfo", &l.memoryFn},
		{"nvmlDeviceGetUtilizationRates", &l.utilizationFn},
	}
	addrs := make([]uintptr, len(syms))
	for i, s := range syms {
		a, err := purego.Dlsym(h, s.name)
		if err != nil || a == 0 {
			return ErrorFunctionNotFound
		}
		addrs[i] = a
	}
	for i, s := range syms {
		purego.RegisterFunc(s.fn, addrs[i])
	}
	return Success
}

func (l *library) loaded() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.handle != 0
}

// Shutdown shuts NVML down; the library stays loaded for a later Init.
func (l *library) Shutdown() Return {
	if !l.loaded() {
		return ErrorUninitialized
	}
	return l.shutdownFn()
}

func (l *library) DeviceGetCount() (int, Return) {
	if !l.loaded() {
		return 0, ErrorUninitialized
	}
	var n uint32
	r := l.countFn(&n)
	return int(n), r
}

func (l *library) DeviceGetHandleByIndex(i int) (Device, Return) {
	if !l.loaded() {
		return nil, ErrorUninitialized
	}
	if i < 0 || i > int(^uint32(0)) {
		return nil, ErrorNotSupported
	}
	var h uintptr
	if r := l.handleFn(uint32(i), &h); r != Success {
		return nil, r
	}
	return device{l, h}, Success
}

type device struct {
	l *library
	h uintptr
}

func (d device) GetName() (string, Return) { return d.str(d.l.nameFn) }
func (d device) GetUUID() (string, Return) { return d.str(d.l.uuidFn) }

func (d device) str(fn func(uintptr, *byte, uint32) Return) (string, Return) {
	var buf [stringLen]byte
	if r := fn(d.h, &buf[0], stringLen); r != Success {
		return "", r
	}
	if i := bytes.IndexByte(buf[:], 0); i >= 0 {
		return string(buf[:i]), Success
	}
	return string(buf[:]), Success
}

func (d device) GetMemoryInfo() (Memory, Return) {
	var m Memory
	r := d.l.memoryFn(d.h, &m)
	return m, r
}

func (d device) GetUtilizationRates() (Utilization, Return) {
	var u Utilization
	r := d.l.utilizationFn(d.h, &u)
	return u, r
}
