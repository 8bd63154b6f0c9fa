package mesh

import (
	"runtime"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

func mockGPU(name, uuid string, mem uint64, util uint32) *mock.Device {
	return &mock.Device{
		GetNameFunc:       func() (string, nvml.Return) { return name, nvml.SUCCESS },
		GetUUIDFunc:       func() (string, nvml.Return) { return uuid, nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) { return nvml.Memory{Total: mem}, nvml.SUCCESS },
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: util}, nvml.SUCCESS
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
	lib := &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:       func() nvml.Return { shutdowns++; return nvml.SUCCESS },
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			return devs[i], nvml.SUCCESS
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
	lib := &mock.Interface{
		InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND },
		DeviceGetCountFunc: func() (int, nvml.Return) {
			t.Error("DeviceGetCount called after a failed Init")
			return 0, nvml.ERROR_UNINITIALIZED
		},
		ShutdownFunc: func() nvml.Return {
			t.Error("Shutdown called after a failed Init")
			return nvml.ERROR_UNINITIALIZED
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
		return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED
	}
	lib := &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:       func() nvml.Return { return nvml.SUCCESS },
		DeviceGetCountFunc: func() (int, nvml.Return) { return 2, nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i == 0 {
				return nil, nvml.ERROR_GPU_IS_LOST
			}
			return half, nvml.SUCCESS
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
