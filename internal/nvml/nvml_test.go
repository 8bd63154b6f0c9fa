package nvml

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// TestBindingAgainstFakeDriver loads a C library that answers like NVML
// with two GPUs and reads them through the binding: the calling convention,
// the structs' layouts and the strings must come through intact.
func TestBindingAgainstFakeDriver(t *testing.T) {
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not found: cannot build the fake libnvidia-ml.so.1")
	}
	so := filepath.Join(t.TempDir(), "libnvidia-ml.so.1")
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", so, "testdata/fakenvml.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	l := &library{path: so}
	if n, r := l.DeviceGetCount(); r != ErrorUninitialized || n != 0 {
		t.Fatalf("DeviceGetCount before Init: %d, %v; want 0, uninitialized", n, r)
	}
	if r := l.Init(); r != Success {
		t.Fatalf("Init: %v", r)
	}
	n, r := l.DeviceGetCount()
	if r != Success || n != 2 {
		t.Fatalf("DeviceGetCount: %d, %v; want 2, success", n, r)
	}
	type gpu struct {
		name, uuid string
		mem        Memory
		util       Utilization
		utilRet    Return
	}
	want := []gpu{
		{"NVIDIA H100 80GB HBM3", "GPU-11111111-2222-3333-4444-555555555555", Memory{Total: 85899345920, Free: 1, Used: 85899345919}, Utilization{Gpu: 97, Memory: 41}, Success},
		{"NVIDIA GeForce RTX 4090", "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", Memory{Total: 25757220864, Free: 1, Used: 25757220863}, Utilization{}, ErrorNotSupported},
	}
	for i, w := range want {
		d, r := l.DeviceGetHandleByIndex(i)
		if r != Success {
			t.Fatalf("handle %d: %v", i, r)
		}
		var g gpu
		var rs [3]Return
		g.name, rs[0] = d.GetName()
		g.uuid, rs[1] = d.GetUUID()
		g.mem, rs[2] = d.GetMemoryInfo()
		g.util, g.utilRet = d.GetUtilizationRates()
		if rs != [3]Return{} || g != w {
			t.Errorf("GPU %d: got %+v (returns %v), want %+v", i, g, rs, w)
		}
	}
	if _, r := l.DeviceGetHandleByIndex(2); r == Success {
		t.Error("handle 2 of 2 GPUs: success")
	}
	if r := l.Shutdown(); r != Success {
		t.Errorf("Shutdown: %v", r)
	}
}

// TestMissingLibrary: without the driver's library Init says so and nothing
// else is called.
func TestMissingLibrary(t *testing.T) {
	l := &library{path: filepath.Join(t.TempDir(), "libnvidia-ml.so.1")}
	if r := l.Init(); r != ErrorLibraryNotFound {
		t.Fatalf("Init: %v, want library not found", r)
	}
	if r := l.Shutdown(); r != ErrorUninitialized {
		t.Errorf("Shutdown after a failed Init: %v", r)
	}
}
