package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringmesh/ringmesh/internal/netlab"
	"github.com/ringmesh/ringmesh/internal/systest"
)

// labCheckpointNodes starts a ringmesh node in each of n lab hosts (egress shaped to
// rate bits/s), each joined to the first, with extra flags.
func labCheckpointNodes(b *testing.B, n int, rate int64, extra ...string) (*netlab.Lab, []*systest.Proc) {
	lab := shapedLab(b, n, rate)
	ps := systest.LabCluster(b, lab, b.TempDir(), n, append([]string{"--no-mdns", "--no-dht"}, extra...)...)
	return lab, ps
}

// labCkptSize is the checkpoint size of the lab fetch benchmark.
const labCkptSize = 1 << 30

// BenchmarkLabCheckpointFetch1Gbit: 4 hosts; 3 providers hold a 1 GiB
// checkpoint (each saved the same file: content addressed, one root); the
// 4th host, its ingress shaped to 1 Gbit/s, fetches it from all three.
// Reports the fetch rate and its ratio to the fetcher's ingress line rate.
func BenchmarkLabCheckpointFetch1Gbit(b *testing.B) {
	const rate = 1e9
	lab, ps := labCheckpointNodes(b, 4, 0, "--replicas", "1")
	lab.SetIngressRate(3, rate)
	bin := systest.Binary(b)
	file := filepath.Join(b.TempDir(), "ckpt.bin")
	f, _ := os.Create(file)
	io.CopyN(f, rand.Reader, labCkptSize)
	f.Close()
	var root string
	for _, p := range ps[:3] {
		out, err := exec.Command(bin, "checkpoint", "save", "--data-dir", p.Dir, "--step", "1", file).CombinedOutput()
		if err != nil {
			b.Fatalf("save: %v\n%s", err, out)
		}
		// "saved step N root HASH size S"
		fields := strings.Fields(string(out))
		for i, f := range fields {
			if f == "root" && i+1 < len(fields) {
				root = fields[i+1]
			}
		}
	}
	systest.Eventually(b, time.Minute, func() error {
		out, err := exec.Command(bin, "checkpoint", "ls", "--data-dir", ps[3].Dir, "--json").Output()
		if err != nil {
			return err
		}
		if strings.Count(string(out), "12D3") < 3 {
			return fmt.Errorf("fetcher does not see 3 providers yet: %s", out)
		}
		return nil
	})
	get := exec.Command(bin, "checkpoint", "get", "--data-dir", ps[3].Dir, "--root", root, "-o", filepath.Join(b.TempDir(), "got"), "--json")
	var stderr strings.Builder
	get.Stderr = &stderr
	out, err := get.Output()
	if err != nil {
		b.Fatalf("get: %v\n%s%s", err, out, stderr.String())
	}
	var res struct {
		Fetch struct {
			Fetched   int64    `json:"fetched"`
			FetchMS   int64    `json:"fetch_ms"`
			Providers []string `json:"providers"`
		} `json:"fetch"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Fetch.FetchMS == 0 {
		b.Fatalf("get --json output %s: %v", out, err)
	}
	gbps := float64(res.Fetch.Fetched) / (float64(res.Fetch.FetchMS) / 1000) / 1e9
	line := rate / 8 / 1e9
	b.ReportMetric(gbps, "GBps")
	b.ReportMetric(gbps/line, "of_line_rate")
	b.Logf("lab checkpoint providers=%d size=%dMiB ingress=1Gbit/s fetch_s=%.3f GBps=%.4f (%.3f of the 0.125 GB/s line rate)",
		len(res.Fetch.Providers), labCkptSize>>20, float64(res.Fetch.FetchMS)/1000, gbps, gbps/line)
}
