package localapi

import (
	"encoding/json"
	"testing"
	"time"
)

// TestStatusGolden pins the keys of a status report: the Python client and
// scripts reading `ringmesh status --json` depend on them.
func TestStatusGolden(t *testing.T) {
	sc := &StateCheck{Epoch: 1, Step: 9, Hash: "aa", Majority: "bb", Agree: 1, Reporting: 3, Diverged: true}
	st := Status{Mesh: "m", Private: true, SecretFile: "/d/mesh.psk", MetricsAddr: "127.0.0.1:9464",
		Self:  SelfStatus{ID: "p1", Addrs: []string{"/ip4/127.0.0.1/tcp/1/p2p/p1"}, EgressBps: 1, IngressBps: 2, ProbedOut: 3, ProbedIn: 4},
		Lanes: LaneStats{Mode: "tls", Direct: 1, Fallback: 2, Stream: 3, Refused: 4, PortsExhausted: 5},
		Members: []MemberStatus{{ID: "p1", State: "alive", Incarnation: 2, Addrs: []string{"/ip4/127.0.0.1/tcp/1"},
			GPUs: []GPU{{Name: "A100", UUID: "GPU-1", MemoryBytes: 1 << 30, UtilizationPct: 50}}, CPUs: 8, MemoryBytes: 1 << 33,
			LastSeen: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}},
		Rounds: RoundsStatus{State: "training", Reason: "r", Epoch: 1, NextStep: 10, Members: []string{"p1"}, Applied: 9,
			Retries: 1, Dropped: 2, WaitingFor: []string{"p2"},
			Plan: []PlanEntry{{ID: "p1", Share: 0.5, SamplesPerSec: 100, EgressBps: 1, IngressBps: 2, LocalRanks: 4}}},
		StateCheck: StateCheckStatus{Last: sc, Verdict: sc, Diverged: true, Reported: 9, Checks: map[string]uint64{"diverged": 1}, Resyncs: 1},
		Training:   TrainingStatus{Mode: "diloco", SyncEvery: 50, Wire: "int8", Step: 7, Members: 4, WireBytes: 1088, SentBytes: 1632},
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"mesh":"m","private":true,"secret_file":"/d/mesh.psk","metrics_addr":"127.0.0.1:9464",` +
		`"self":{"id":"p1","addrs":["/ip4/127.0.0.1/tcp/1/p2p/p1"],"egress_Bps":1,"ingress_Bps":2,"probed_out":3,"probed_in":4},` +
		`"lanes":{"mode":"tls","direct":1,"fallback":2,"stream":3,"refused":4,"ports_exhausted":5},` +
		`"members":[{"id":"p1","state":"alive","incarnation":2,"addrs":["/ip4/127.0.0.1/tcp/1"],` +
		`"gpus":[{"name":"A100","uuid":"GPU-1","memory_bytes":1073741824,"utilization_pct":50}],"cpus":8,"memory_bytes":8589934592,` +
		`"last_seen":"2025-01-02T03:04:05Z"}],` +
		`"rounds":{"state":"training","reason":"r","epoch":1,"next_step":10,"members":["p1"],"applied":9,"retries":1,"dropped":2,` +
		`"waiting_for":["p2"],"plan":[{"id":"p1","share":0.5,"samples_per_s":100,"egress_Bps":1,"ingress_Bps":2,"local_ranks":4}]},` +
		`"state_check":{"last":{"epoch":1,"step":9,"hash":"aa","majority":"bb","agree":1,"reporting":3,"diverged":true},` +
		`"verdict":{"epoch":1,"step":9,"hash":"aa","majority":"bb","agree":1,"reporting":3,"diverged":true},` +
		`"diverged":true,"reported":9,"checks":{"diverged":1},"resyncs":1},` +
		`"training":{"mode":"diloco","sync_every":50,"wire":"int8","step":7,"members":4,"wire_bytes":1088,"sent_bytes":1632}}`
	if string(b) != want {
		t.Errorf("status JSON\n got %s\nwant %s", b, want)
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if b2, _ := json.Marshal(back); string(b2) != want {
		t.Errorf("status JSON after a round trip\n got %s\nwant %s", b2, want)
	}
}
