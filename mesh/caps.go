package mesh

import (
	"bufio"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/ringmesh/ringmesh/internal/nvml"
)

// maxGPUs caps the GPUs advertised in a heartbeat.
const maxGPUs = 16

// Capabilities describes what a host offers. Advertised in heartbeats.
type Capabilities struct {
	GPUs        []GPU  `json:"gpus"`
	CPUs        int    `json:"cpus"`
	MemoryBytes uint64 `json:"memory_bytes"`
}

// GPU is one NVIDIA GPU found through NVML.
type GPU struct {
	Name           string `json:"name"`
	UUID           string `json:"uuid"`
	MemoryBytes    uint64 `json:"memory_bytes"`
	UtilizationPct int    `json:"utilization_pct"`
}

// DetectCapabilities reports the host's GPUs (through lib), CPU cores and RAM
// (/proc/meminfo). Every NVML call is gated on a successful Init: without a
// driver (Init fails, e.g. ERROR_LIBRARY_NOT_FOUND) the host is a CPU host.
// It never fails and never logs; a GPU whose handle cannot be read is
// skipped, a field that cannot be read is left zero. A nil lib means the
// real library.
func DetectCapabilities(lib nvml.Interface) Capabilities {
	c := Capabilities{CPUs: runtime.NumCPU(), MemoryBytes: memTotal()}
	if lib == nil {
		lib = nvml.New()
	}
	c.GPUs = detectGPUs(lib)
	return c
}

func detectGPUs(lib nvml.Interface) (gpus []GPU) {
	if ret := lib.Init(); ret != nvml.Success {
		return nil
	}
	defer lib.Shutdown()
	n, ret := lib.DeviceGetCount()
	if ret != nvml.Success {
		return nil
	}
	for i := 0; i < n && len(gpus) < maxGPUs; i++ {
		dev, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.Success {
			continue
		}
		gpus = append(gpus, readGPU(dev))
	}
	return gpus
}

func readGPU(dev nvml.Device) GPU {
	var g GPU
	if name, ret := dev.GetName(); ret == nvml.Success {
		g.Name = truncate(name, maxGPUNameLen)
	}
	if uuid, ret := dev.GetUUID(); ret == nvml.Success {
		g.UUID = truncate(uuid, maxGPUUUIDLen)
	}
	if mem, ret := dev.GetMemoryInfo(); ret == nvml.Success {
		g.MemoryBytes = mem.Total
	}
	if u, ret := dev.GetUtilizationRates(); ret == nvml.Success && u.Gpu <= 100 {
		g.UtilizationPct = int(u.Gpu)
	}
	return g
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// memTotal returns MemTotal from /proc/meminfo in bytes, 0 if unknown.
func memTotal() uint64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	return parseMemTotal(f)
}

func parseMemTotal(r io.Reader) uint64 {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}
