package bench

import (
	"bytes"
	"image/png"
	"testing"
)

// TestPlotTrain: the plot is a PNG of the documented size, and points of
// a member without a name are an error, not a panic.
func TestPlotTrain(t *testing.T) {
	var pts []TrainPoint
	for s := range uint64(30) {
		for m := range 3 {
			share := 1.0 / 3
			if s > 10 {
				share = []float64{0.5, 0.25, 0.25}[m]
			}
			pts = append(pts, TrainPoint{Member: m, Step: s, Share: share, StepTime: 0.1 + float64(m)/100})
		}
	}
	var b bytes.Buffer
	if err := PlotTrain(&b, "t", []string{"a", "b", "c"}, pts); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	if sz := img.Bounds().Size(); sz.X != 960 || sz.Y != 640 {
		t.Errorf("plot is %v, want 960x640", sz)
	}
	if err := PlotTrain(&b, "t", []string{"a"}, pts); err == nil {
		t.Errorf("points of unnamed members plotted without error")
	}
}
