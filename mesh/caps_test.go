package mesh

import (
	"runtime"
	"strings"
	"testing"

	"github.com/ringmesh/ringmesh/internal/nvml"
)

// fakeLib and fakeGPU are NVML as a set of functions; calling a nil one
// panics, which fails the test.
type fakeLib struct {
	InitFunc, ShutdownFunc     func() nvml.Return
	DeviceGetCountFunc         func() (int, nvml.Return)
	DeviceGetHandleByIndexFunc func(int) (nvml.Device, nvml.Return)
}

func (f *fakeLib) Init() nvml.Return                  { return f.InitFunc() }
func (f *fakeLib) Shutdown() nvml.Return              { return f.ShutdownFunc() }
func (f *fakeLib) DeviceGetCount() (int, nvml.Return) { return f.DeviceGetCountFunc() }
func (f *fakeLib) DeviceGetHandleByIndex(i int) (nvml.Device, nvml.Return) {
	return f.DeviceGetHandleByIndexFunc(i)
}

type fakeGPU struct {
	GetNameFunc, GetUUIDFunc func() (string, nvml.Return)
	GetMemoryInfoFunc        func() (nvml.Memory, nvml.Return)
	GetUtilizationRatesFunc  func() (nvml.Utilization, nvml.Return)
}

func (g *fakeGPU) GetName() (string, nvml.Return)            { return g.GetNameFunc() }
func (g *fakeGPU) GetUUID() (string, nvml.Return)            { return g.GetUUIDFunc() }
func (g *fakeGPU) GetMemoryInfo() (nvml.Memory, nvml.Return) { return g.GetMemoryInfoFunc() }
func (g *fakeGPU) GetUtilizationRates() (nvml.Utilization, nvml.Return) {
	return g.GetUtilizationRatesFunc()
}

func mockGPU(name, uuid string, mem uint64, util uint32) *fakeGPU {
	return &fakeGPU{
		GetNameFunc:       func() (string, nvml.Return) { return name, nvml.Success },
		GetUUIDFunc:       func() (string, nvml.Return) { return uuid, nvml.Success },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) { return nvml.Memory{Total: mem}, nvml.Success },
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: util}, nvml.Success
		},
	}
}

// TestDetectCapabilitiesMixedHost: two A100s and one RTX 4090.
func TestDetectCapabilitiesMixedHost(t *testing.T) {
	devs := []nvml.Device{
		mockGPU("NVIDIA A100-SXM4-80GB", "GPU-a100-0", 80<<30, 97),
		mockGPU("NVIDIA A100-SXM4-80GB", "GPU-a100-1", 80<<30, 12),
		mockGPU("NVIDIA GeForce RTX 4090", "GPU-4090-0", 24<<30, 0),
	}
	shutdowns := 0
	lib := &fakeLib{
		InitFunc:           func() nvml.Return { return nvml.Success },
		ShutdownFunc:       func() nvml.Return { shutdowns++; return nvml.Success },
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(devs), nvml.Success },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			return devs[i], nvml.Success
		},
	}
	got := DetectCapabilities(lib)
	want := []GPU{
		{Name: "NVIDIA A100-SXM4-80GB", UUID: "GPU-a100-0", MemoryBytes: 80 << 30, UtilizationPct: 97},
		{Name: "NVIDIA A100-SXM4-80GB", UUID: "GPU-a100-1", MemoryBytes: 80 << 30, UtilizationPct: 12},
		{Name: "NVIDIA GeForce RTX 4090", UUID: "GPU-4090-0", MemoryBytes: 24 << 30, UtilizationPct: 0},
	}
	if len(got.GPUs) != len(want) {
		t.Fatalf("got %d GPUs %+v, want %d", len(got.GPUs), got.GPUs, len(want))
	}
	for i := range want {
		if got.GPUs[i] != want[i] {
			t.Errorf("GPU %d: got %+v, want %+v", i, got.GPUs[i], want[i])
		}
	}
	if got.CPUs != runtime.NumCPU() {
		t.Errorf("CPUs: got %d, want %d", got.CPUs, runtime.NumCPU())
	}
	if shutdowns != 1 {
		t.Errorf("Shutdown called %d times, want 1", shutdowns)
	}
}

// TestDetectCapabilitiesNoDriver: Init fails, so no other NVML call is made
// and the host is a CPU host.
func TestDetectCapabilitiesNoDriver(t *testing.T) {
	lib := &fakeLib{
		InitFunc: func() nvml.Return { return nvml.ErrorLibraryNotFound },
		DeviceGetCountFunc: func() (int, nvml.Return) {
			t.Error("DeviceGetCount called after a failed Init")
			return 0, nvml.ErrorUninitialized
		},
		ShutdownFunc: func() nvml.Return {
			t.Error("Shutdown called after a failed Init")
			return nvml.ErrorUninitialized
		},
	}
	got := DetectCapabilities(lib)
	if len(got.GPUs) != 0 {
		t.Errorf("got GPUs %+v, want none", got.GPUs)
	}
	if got.CPUs < 1 || got.MemoryBytes == 0 {
		t.Errorf("got CPUs %d, memory %d; want both set", got.CPUs, got.MemoryBytes)
	}
}

// TestDetectCapabilitiesSkipsBrokenGPU: a GPU whose handle fails is skipped,
// an unreadable field is left zero.
func TestDetectCapabilitiesSkipsBrokenGPU(t *testing.T) {
	half := mockGPU("NVIDIA V100", "GPU-v100", 16<<30, 5)
	half.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		return nvml.Utilization{}, nvml.ErrorNotSupported
	}
	lib := &fakeLib{
		InitFunc:           func() nvml.Return { return nvml.Success },
		ShutdownFunc:       func() nvml.Return { return nvml.Success },
		DeviceGetCountFunc: func() (int, nvml.Return) { return 2, nvml.Success },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i == 0 {
				return nil, nvml.ErrorGPUIsLost
			}
			return half, nvml.Success
		},
	}
	got := DetectCapabilities(lib).GPUs
	want := GPU{Name: "NVIDIA V100", UUID: "GPU-v100", MemoryBytes: 16 << 30}
	if len(got) != 1 || got[0] != want {
		t.Errorf("got %+v, want [%+v]", got, want)
	}
}

// TestDetectCapabilitiesRealLibrary runs the real NVML binding: on a host
// without a driver (this CI) it must report a CPU host without failing.
func TestDetectCapabilitiesRealLibrary(t *testing.T) {
	got := DetectCapabilities(nil)
	if got.CPUs != runtime.NumCPU() || got.MemoryBytes == 0 {
		t.Errorf("got CPUs %d, memory %d; want %d CPUs and some memory", got.CPUs, got.MemoryBytes, runtime.NumCPU())
	}
	t.Logf("real NVML: %d GPUs", len(got.GPUs))
}

func TestParseMemTotal(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
	}{
		{"MemTotal:       16303448 kB\nMemFree: 1 kB\n", 16303448 * 1024},
		{"MemFree: 1 kB\n", 0},
		{"MemTotal: lots kB\n", 0},
		{"", 0},
	}
	for _, tt := range tests {
		if got := parseMemTotal(strings.NewReader(tt.in)); got != tt.want {
			t.Errorf("parseMemTotal(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}
