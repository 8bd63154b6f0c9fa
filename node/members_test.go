package node

import (
	"testing"

	"github.com/ringmesh/ringmesh/node/rounds"
)

// TestPayloadRoundTrip: what a node advertises decodes to the same
// figures, and gossip with out-of-range fields is refused whole.
func TestPayloadRoundTrip(t *testing.T) {
	i := rounds.Info{State: rounds.StateTraining, Epoch: 3, Step: 17, List: "abcd", Speed: 900,
		Link: rounds.Link{Egress: 1 << 27, Ingress: 1 << 26}}
	p, ok := decodePayload(encodePayload(i, 123.5, 8))
	if !ok {
		t.Fatal("own payload refused")
	}
	if p.info() != i || p.Samples != 123.5 || p.LocalRanks != 8 {
		t.Errorf("decoded %+v, want %+v with 123.5 samples/s and 8 local ranks", p, i)
	}
	for _, bad := range []string{
		`{"s":"training","k":1,"lr":-1}`,
		`{"s":"training","k":1,"lr":1025}`,
		`{"s":"training","k":1,"r":-3}`,
		`{"s":"boss","k":1}`,
		`not json`,
	} {
		if _, ok := decodePayload([]byte(bad)); ok {
			t.Errorf("payload %s accepted", bad)
		}
	}
}
