package demo

import (
	"bytes"
	"image/color"
	"image/png"
	"testing"
)

func TestPlotLoss(t *testing.T) {
	red := color.RGBA{200, 0, 0, 255}
	pd := plotData{Title: "test, 2 nodes", Steps: 50,
		Global: plotSeries{Name: "batch loss", Color: color.RGBA{0, 0, 0, 255}},
		Marks:  []plotMark{{Step: 20, Label: "kill node1", Color: color.RGBA{0, 0, 200, 255}}}}
	pd.Series = append(pd.Series, plotSeries{Name: "node0", Color: red})
	for s := uint64(0); s < 50; s++ {
		pd.Series[0].Points = append(pd.Series[0].Points, plotPoint{s, 2.3 / float32(1+s)})
		pd.Global.Points = append(pd.Global.Points, plotPoint{s, 2 / float32(1+s)})
	}
	var buf bytes.Buffer
	if err := plotLoss(&buf, pd); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if b := img.Bounds(); b.Dx() != PlotWidth || b.Dy() != PlotHeight {
		t.Fatalf("image %v, want %dx%d", b, PlotWidth, PlotHeight)
	}
	// The series' colour appears (its line and its legend entry).
	n := 0
	for y := 0; y < PlotHeight; y++ {
		for x := 0; x < PlotWidth; x++ {
			if r, g, b, _ := img.At(x, y).RGBA(); r>>8 == 200 && g == 0 && b == 0 {
				n++
			}
		}
	}
	if n < 100 {
		t.Errorf("%d pixels of the series colour, want a line and a legend box (>= 100)", n)
	}
}
