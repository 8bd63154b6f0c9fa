package node

import (
	"testing"

	"github.com/ringmesh/ringmesh/node/localapi"
)

// TestTrainedMetrics: the trainer's mode from its last applied all-reduce
// reaches the gauges.
func TestTrainedMetrics(t *testing.T) {
	m := newMetrics()
	m.trained(localapi.TrainingStatus{Mode: "diloco", SyncEvery: 50, Wire: "int8", Step: 7, Members: 4, WireBytes: 1088, SentBytes: 1632})
	for name, want := range map[string]float64{
		"ringmesh_trainer_sync_every": 50, "ringmesh_round_wire_bytes": 1088, "ringmesh_round_sent_bytes": 1632,
	} {
		if got := gaugeValue(t, m, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}
